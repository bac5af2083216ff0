"""Traffic simulator: benign archetypes and extraction campaigns on real prompts and real traces.

``simulate(out_dir, preset=..., n_accounts=..., days=..., seed=..., data_path=...)`` writes
``traffic.jsonl.gz`` (contracts.md §1 records), ``accounts.jsonl``, ``labels.jsonl`` and
``realism.json``. See :mod:`.archetypes` for the behaviours and their parameters, :mod:`.generate`
for the timing, token and prompt-reuse models, :mod:`.core` for the presets and ``docs/simulator.md``.
"""

from distillguard.simulate.core import PRESETS, Preset, SimulationResult, read_traffic, simulate
from distillguard.simulate.realism import print_realism
from distillguard.simulate.sources import default_data_dir, shipped_sample_dir

__all__ = sorted(["PRESETS", "Preset", "SimulationResult", "default_data_dir", "print_realism", "read_traffic",
                  "shipped_sample_dir", "simulate"])
