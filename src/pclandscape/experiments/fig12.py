"""Fig 12: as Figs 5 and 11, but starting near another zero-rank saddle.

Every weight starts near zero (std 5e-3, as in Fig 5) except W_{L-1}, drawn as the paper's DNN
notebook leaves it ("other_saddle": PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``,
see ``fig5.torch_default_init``): the network starts next to the zero-rank critical point of Theorem 3 studied in
Figs 9-10 ("all hyperparameters except the initialisation remained unchanged", §A.4). The
claims are those of Fig 5: PC leaves the plateau far earlier than BP, and BP's gradient
vanishes there while PC's does not.
"""

from __future__ import annotations

import dataclasses

from . import fig5
from .base import Results

NAME = "fig12"
VERSION = 2  # 2: W_{L-1} drawn as the notebook's (PyTorch's default uniform), was N(0, 1/fan_in)
DESCRIPTION = "Fig 12: BP vs PC escaping the zero-rank saddle 'all W near zero but W_{L-1}' (as Fig 5)"


@dataclasses.dataclass(frozen=True)
class Config(fig5.Config):
    init: str = "zero_rank"
    cnn: bool = False  # the paper's Fig 12 shows the MLPs
    hessian_check: bool = False


def quick_config() -> Config:
    """Fig 5's quick variant at the zero-rank saddle, linear and tanh MLPs."""
    base = dataclasses.asdict(fig5.quick_config())
    base.update(init="zero_rank", cnn=False, hessian_check=False, activations=("linear", "tanh"))
    return Config(**base)


def progress_total(cfg) -> int:
    return fig5.progress_total(cfg)


def run(cfg: Config, progress=None) -> Results:
    res = fig5.run(cfg, progress)
    res.name = NAME
    for c in res.claims:
        c.id = c.id.replace("fig5.", "fig12.")
    return res


def plot(res: Results) -> dict:
    return fig5.plot(res)
