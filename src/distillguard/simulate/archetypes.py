"""Archetypes of the simulated traffic: one small, documented parameter set each.

Benign archetypes (``label = "benign"``)

==================  ======================================================================================
name                behaviour (main parameters in :data:`BENIGN`)
==================  ======================================================================================
individual          people on an app or SDK: bursty sessions in daytime of their timezone, multi-turn
                    (real HH-RLHF follow-ups or human-style follow-ups), 10% behind mobile CGNAT IPs
product             SaaS product serving its own end users: fixed system prompt, ``end_user`` ids,
                    diurnal load with Azure-trace burstiness and token lengths, optional RAG context
batch_pipeline      one template over many real items (classify/summarise/extract/translate), cron-like
                    runs or Batch API files, temperature 0, fixed ``max_tokens``, JSON output
eval_harness        a public question set (Arena-Hard) in bursts, temperature 0, model sweeps (incl. the
                    new model within hours of its release), some pass@k ``n`` > 1 and logprob MC evals
coding_assistant    IDE assistant: long multi-turn contexts (Azure code / Mooncake token lengths), streaming
agent_framework     tool-call loops: ``tools`` declared, assistant ``tool_calls`` and ``tool`` results grow
                    the context for 2-8 steps per task
company             2-6 accounts sharing one payment method, one email domain and one office /24;
                    each member behaves as an individual, product, batch or coding account
campus              20-80 students behind one campus NAT address, university email domain, shared
                    homework prompts (near-duplicates across accounts)
reseller            API reseller / chat front-end: broad, very high volume, many end users (or none),
                    streaming, several cloud IPs and models
==================  ======================================================================================

Extraction archetypes (``label = "extraction"``), each with the public report it is modelled on

===================  =====================================================================================
name                 behaviour (main parameters in :data:`EXTRACTION`)
===================  =====================================================================================
bulk                 one account, 2k-10k requests/day from cloud IPs, broad distillation prompt set
hydra                hundreds of accounts each under per-account limits (< 60 rpm, < 1M tokens/day),
                     rotating residential proxy IPs, a few payment cards reused, accounts created in
                     waves, one prompt set sharded between them
reseller_mixed       a real reseller account whose traffic also carries an extraction stream (15-35%)
low_and_slow         a few old accounts, 30-120 requests/day during office hours for the whole window
cot_elicitation      prompts wrapped in chain-of-thought / hidden-reasoning instructions in 12 languages,
                     reasoning model at high effort
logprob_harvest      ``logprobs`` + ``top_logprobs`` 5-20, ``n`` 2-8, the same prompt at several temperatures
self_instruct        the real Alpaca self-instruct request (``prompt.txt`` + 3 seed tasks) on
                     ``/v1/completions`` with the real decoding arguments, 5 prompts per request
paraphrase           distillation prompts under wrappers assembled from interchangeable phrasings
model_pivot          extraction on the current model; within hours of the new model's release about half
                     the traffic moves to it
===================  =====================================================================================

Every campaign draws its own operator style (SDK user agent per account, temperature and
``max_tokens`` mix, streaming share, system prompt, a 24/7, office-hours or human-like schedule of a
few active hours a day), mixes 10-40% real human prompts into its distillation prompt set, retypes
30% of prompts, sends 0-35% follow-up turns, and (but for ``bulk``) keeps per-account volumes inside
the range of heavy benign accounts, so that no single field separates it.

>>> sorted(EXTRACTION)[:3]
['bulk', 'cot_elicitation', 'hydra']
>>> BENIGN["individual"].share > BENIGN["reseller"].share
True
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Archetype:
    """Parameters of one simulated behaviour.

    ``share`` is the share of benign accounts (benign archetypes); ``accounts`` the account count
    range of one campaign at the standard preset (extraction). ``per_day`` is the median and
    log-normal sigma of requests per active account per day. ``modelled_on`` cites the public report.

    >>> Archetype(name="x", label="benign", per_day=(10, 1.0)).label
    'benign'
    """

    name: str
    label: str
    description: str = ""
    share: float = 0.0
    accounts: tuple[int, int] = (1, 1)
    per_day: tuple[float, float] = (10.0, 1.0)
    stream: float = 0.3
    params: dict = field(default_factory=dict)
    modelled_on: str = ""


BENIGN: dict[str, Archetype] = {
    a.name: a
    for a in [
        Archetype(name="individual", label="benign", share=0.50, per_day=(2.5, 1.5), stream=0.55,
                  description="bursty human sessions in local daytime, multi-turn",
                  params={"active_day_prob": 0.45, "turns_geom_p": 0.45, "hh_dialogue_share": 0.3,
                          "perturb": 0.9, "cgnat_share": 0.10, "mobile_share": 0.2, "think_s": 40.0}),
        Archetype(name="product", label="benign", share=0.045, per_day=(10, 1.1), stream=0.6,
                  description="system prompt, end_user ids, diurnal load, Azure conv burstiness",
                  params={"rag_share": 0.5, "end_users_per_100_req": 18, "turns_geom_p": 0.55, "perturb": 0.9}),
        Archetype(name="batch_pipeline", label="benign", share=0.035, per_day=(15, 1.0), stream=0.0,
                  description="one template over many items, cron or Batch API, temperature 0",
                  params={"batch_api_share": 0.4, "runs_per_day": (1, 3)}),
        Archetype(name="eval_harness", label="benign", share=0.02, per_day=(0, 0), stream=0.0,
                  description="benchmark questions in bursts at temperature 0, model sweeps",
                  params={"runs": (1, 2), "models": (1, 2), "questions": (30, 200), "passk_share": 0.1, "logprob_mc_share": 0.2,
                          "early_adopter_share": 0.5}),
        Archetype(name="coding_assistant", label="benign", share=0.10, per_day=(9, 0.9), stream=0.9,
                  description="long multi-turn contexts (Azure code, Mooncake lengths)",
                  params={"turns": (3, 14), "context_chars_cap": 1200}),
        Archetype(name="agent_framework", label="benign", share=0.05, per_day=(8, 1.0), stream=0.2,
                  description="tool-call loops with growing context",
                  params={"steps": (2, 8), "tools": (2, 5)}),
        Archetype(name="company", label="benign", share=0.09, per_day=(4, 1.0), stream=0.5,
                  description="2-6 accounts sharing payment, email domain and office /24",
                  params={"size": (2, 6), "member_kinds": ["individual", "product", "batch_pipeline", "coding_assistant"]}),
        Archetype(name="campus", label="benign", share=0.09, per_day=(2.5, 0.9), stream=0.6,
                  description="20-80 students behind one NAT IP, shared homework prompts",
                  params={"size": (20, 80), "homework_share": 0.3, "homework_prompts": (4, 10)}),
        Archetype(name="reseller", label="benign", share=0.002, per_day=(200, 0.8), stream=0.7,
                  description="broad, high-volume legitimate front-end traffic",
                  params={"end_user_share": 0.5}),
    ]
}

_ANTHROPIC_2026 = ("Provider disclosure, Feb 2026: three labs, >16M exchanges via ~24,000 fraudulent accounts; "
                   "'hydra cluster' proxy networks of >20,000 accounts mixed with customer traffic")
EXTRACTION: dict[str, Archetype] = {
    a.name: a
    for a in [
        Archetype(name="bulk", label="extraction", accounts=(1, 1), per_day=(4000, 0.4), stream=0.1,
                  description="one account pulling a broad prompt set at high volume",
                  modelled_on="Late-2024 reports of a lab-linked group pulling large volumes of data through a "
                              "US provider's API (MITRE ATLAS AML.T0024.002, AML.CS0056)"),
        Archetype(name="hydra", label="extraction", accounts=(150, 300), per_day=(30, 0.9), stream=0.3,
                  description="many accounts under per-account limits, residential proxies, waves, shards",
                  params={"max_rpm": 60, "max_tokens_per_day": 1_000_000, "cards": (3, 8), "card_reuse": 0.7,
                          "waves": (2, 4), "proxy_pool": (1500, 8000), "sticky_requests": (5, 40),
                          "lifetime_days": (2, 7)},
                  modelled_on=_ANTHROPIC_2026),
        Archetype(name="reseller_mixed", label="extraction", accounts=(1, 2), per_day=(600, 0.6), stream=0.6,
                  description="extraction stream hidden in a legitimate reseller's traffic",
                  params={"extraction_share": (0.15, 0.35)},
                  modelled_on="Provider statements (2025-26) that distillers evade restrictions through "
                              "obfuscated third-party routers and resellers"),
        Archetype(name="low_and_slow", label="extraction", accounts=(2, 6), per_day=(40, 0.6), stream=0.4,
                  description="old accounts, modest daily volume in office hours for weeks",
                  modelled_on="MITRE ATLAS AML.T0024.002 (Extract AI Model via inference API); rate-limit "
                              "evasion described in the Feb 2026 disclosures"),
        Archetype(name="cot_elicitation", label="extraction", accounts=(10, 40), per_day=(50, 0.9), stream=0.3,
                  description="chain-of-thought / reasoning-trace coercion in many languages",
                  params={"non_english_share": (0.3, 0.8), "reasoning_model_share": 0.6},
                  modelled_on="Feb 2026: a 100,000-prompt campaign, much of it not in English, coercing reasoning "
                              "traces; and a campaign seeking chain-of-thought data (" + _ANTHROPIC_2026 + ")"),
        Archetype(name="logprob_harvest", label="extraction", accounts=(3, 15), per_day=(60, 0.9), stream=0.0,
                  description="logprobs/top_logprobs, n > 1, temperature sweeps",
                  params={"top_logprobs": [5, 10, 20], "n": [1, 2, 3, 5], "temperatures": [0.0, 0.3, 0.7, 1.0, 1.3]},
                  modelled_on="Model-stealing via logits/log-probabilities (Carlini et al. 2024, 'Stealing Part of "
                              "a Production Language Model'); ATLAS AML.T0024.002"),
        Archetype(name="self_instruct", label="extraction", accounts=(1, 5), per_day=(30, 0.5), stream=0.0,
                  description="the real Alpaca self-instruct request on /v1/completions",
                  params={"request_batch_size": 5, "num_prompt_instructions": 3, "temperature": 1.0,
                          "top_p": 1.0, "max_tokens": 3072, "stop": ["\n20", "20.", "20."]},
                  modelled_on="Stanford Alpaca (2023): ~52K instructions generated by text-davinci-003 with "
                              "prompt.txt and 175 seed tasks (generate_instruction.py)"),
        Archetype(name="paraphrase", label="extraction", accounts=(5, 25), per_day=(50, 0.9), stream=0.3,
                  description="templates whose wording varies per request to dodge exact matching",
                  modelled_on="Template rotation described in the Feb 2026 disclosures; GPTeacher/Alpaca-style "
                              "instruction sets"),
        Archetype(name="model_pivot", label="extraction", accounts=(5, 20), per_day=(70, 0.9), stream=0.2,
                  description="half the traffic moves to the newly released model within hours",
                  params={"pivot_share": 0.5, "pivot_delay_h": (1, 10)},
                  modelled_on="Feb 2026 disclosure: a campaign moved half its traffic to a new model within "
                              "24 hours of its release (" + _ANTHROPIC_2026 + ")"),
    ]
}

ALL_ARCHETYPES = {**BENIGN, **EXTRACTION}

#: Campaign archetypes per preset (the standard one covers every extraction archetype).
CAMPAIGNS_STANDARD = (["bulk"] * 2 + ["hydra"] * 3 + ["reseller_mixed"] * 2 + ["low_and_slow"] * 3
                      + ["cot_elicitation"] * 3 + ["logprob_harvest"] * 2 + ["self_instruct"] * 2
                      + ["paraphrase"] * 3 + ["model_pivot"] * 2)
CAMPAIGNS_SMALL = ["bulk", "hydra", "reseller_mixed", "cot_elicitation", "logprob_harvest", "self_instruct",
                   "paraphrase", "model_pivot"]
