"""Screen playbooks (playbooks/screens/NAME.toml): which cases a stability screen runs.

A screen crosses server configurations (a profile plus overrides such as ctx size and
slots) with prompt shapes, target token counts and attempts::

    name = "minimax-rpc-shapes"
    shapes = ["opt", "natural"]
    targets = [45000, 48000]     # tokens, or "50%" of one slot's context
    attempts = 2
    gen = 32
    restart = "after_failure"    # or "between_cases"

    [[configs]]
    name = "reap-q8-np2-ctx100k"
    profile = "minimax-reap-q8"
    ctx_size = 100000
    parallel = 2

A configuration may give its own ``shapes`` and ``targets``. ``[shape_files]`` names
user shapes from text files, relative to the playbook. ``plan`` lists the cases in the
order they run: configuration, then target, then shape, then attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cluster.config.loader import find_named, read_toml, validate
from cluster.config.models import Name, Profile, StrictModel, format_split, parse_split
from cluster.errors import ConfigError
from cluster.measure.records import CaseSpec
from cluster.measure.shapes import BUILTIN_SHAPE_NAMES

# A target is a token count, or a percentage of one slot's context ("50%").
Target = Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=r"^\d{1,3}(\.\d+)?%$")]


def resolve_target(target: int | str, slot_ctx: int) -> int:
    """Tokens for a target: itself, or its percentage of one slot's context."""
    if isinstance(target, int):
        return target
    return max(1, int(slot_ctx * float(target.rstrip("%")) / 100))


class ScreenConfig(StrictModel):
    """One server configuration of a screen: a profile and what it overrides."""

    name: Name
    profile: Name
    ctx_size: int | None = Field(default=None, ge=0)
    parallel: int | None = Field(default=None, ge=1)
    tensor_split: list[float] | None = None
    extra_args: list[str] | None = None
    shapes: list[str] | None = None
    targets: list[Target] | None = None

    @field_validator("tensor_split", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[float] | None:
        return None if value is None else parse_split(value)

    def apply(self, profile: Profile) -> Profile:
        """The profile with this configuration's overrides, validated again."""
        overrides = {
            key: value
            for key, value in (
                ("ctx_size", self.ctx_size),
                ("parallel", self.parallel),
                ("tensor_split", self.tensor_split),
                ("extra_args", self.extra_args),
            )
            if value is not None
        }
        return Profile.model_validate({**profile.model_dump(), **overrides})


class ScreenPlaybook(StrictModel):
    """A whole screen: defaults for every configuration, and the configurations."""

    name: Name
    description: str = ""
    shapes: list[str] = Field(default_factory=lambda: ["opt"])
    targets: list[Target] = Field(default_factory=list)
    gen: int = Field(default=32, ge=1)
    attempts: int = Field(default=2, ge=1)
    restart: Literal["between_cases", "after_failure"] = "after_failure"
    stall_timeout_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=7200.0, gt=0)
    shape_files: dict[Name, str] = Field(default_factory=dict)
    configs: list[ScreenConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ScreenPlaybook:
        names = [config.name for config in self.configs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"configuration names repeat: {', '.join(duplicates)}")
        known = set(BUILTIN_SHAPE_NAMES) | set(self.shape_files)
        for config in self.configs:
            unknown = sorted(set(config.shapes or self.shapes) - known)
            if unknown:
                raise ValueError(
                    f"configuration {config.name!r}: unknown shape {unknown[0]!r} "
                    f"(known: {', '.join(sorted(known))})"
                )
            if not (config.targets or self.targets):
                raise ValueError(f"configuration {config.name!r} has no targets")
        clash = set(self.shape_files) & set(BUILTIN_SHAPE_NAMES)
        if clash:
            raise ValueError(f"shape_files may not redefine built-in shape {sorted(clash)[0]!r}")
        return self

    def shape_paths(self, base: Path) -> dict[str, Path]:
        return {name: (base / path).resolve() for name, path in self.shape_files.items()}


def load_screen(playbooks_dir: Path, name: str) -> tuple[ScreenPlaybook, Path]:
    """A screen by name from playbooks/screens/, or from a .toml path."""
    path = find_named(playbooks_dir / "screens", name, "screen playbook", "screens")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    playbook = validate(ScreenPlaybook, data, str(path))
    for shape, shape_file in playbook.shape_paths(path.parent).items():
        if not shape_file.is_file():
            raise ConfigError(
                f"shape file {shape_file} does not exist",
                file=str(path),
                key=f"shape_files.{shape}",
            )
    return playbook, path


def plan(
    playbook: ScreenPlaybook, profiles: dict[str, Profile]
) -> list[tuple[ScreenConfig, Profile, list[CaseSpec]]]:
    """Every case of the screen in running order, grouped by server configuration.

    ``profiles`` maps each configuration's profile name to the loaded profile.
    """
    grouped = []
    for config in playbook.configs:
        profile = config.apply(profiles[config.profile])
        targets = config.targets or playbook.targets
        if not profile.ctx_size and any(isinstance(t, str) for t in targets):
            raise ConfigError(
                f"configuration {config.name!r}: a target in % of the context needs a ctx_size",
                key="configs.ctx_size",
            )
        slot_ctx = profile.ctx_size // profile.parallel
        cases = [
            CaseSpec(
                config=config.name,
                profile=profile.name,
                ctx_size=profile.ctx_size,
                parallel=profile.parallel,
                split=format_split(profile.tensor_split),
                shape=shape,
                target=resolve_target(target, slot_ctx),
                gen=playbook.gen,
                attempt=attempt,
            )
            for target in targets
            for shape in (config.shapes or playbook.shapes)
            for attempt in range(1, playbook.attempts + 1)
        ]
        grouped.append((config, profile, cases))
    return grouped
