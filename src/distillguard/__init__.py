"""distillguard: detect, stop and prove distillation of a language model through its API."""

from distillguard.errors import DistillguardError, InputError, RecordRejected

__all__ = ["DistillguardError", "InputError", "RecordRejected", "__version__"]
__version__ = "0.1.0"
