"""The Containerfile read as its stages, and what each image target installs, for the tests that check it.

The images cannot be built on the test machine (no container engine, no base-image registry), so the tests
read the file: ``test_containerfile.py`` checks each target's instructions, ``test_openshift_template.py``
that each pod runs the image whose install holds its command, and ``test_role_installs.py`` installs a
target's extras into a venv of its own and runs a job through it. The extras are read from here, so those
venvs are what the images install.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass

from packaging.requirements import Requirement

from config.paths import PROJECT_ROOT

CONTAINERFILE_PATH = PROJECT_ROOT / "Containerfile"
SETUP_CFG_PATH = PROJECT_ROOT / "setup.cfg"
# The image targets, by role: the rest of the stages only build what they share.
TARGETS = ("api", "worker-cpu", "worker-gpu")
# ``pip install "$(echo /tmp/dist/yolo_jobs-*.whl)[extra,...]"``: the service's wheel with its role's extras.
WHEEL_INSTALL = re.compile(r'pip install [^&;]*"\$\(echo /tmp/dist/yolo_jobs-\*\.whl\)\[([^\]]+)\]"')
# ``pip install --no-cache-dir --no-deps name==version ...``: what a role installs without its dependencies.
NO_DEPS_INSTALL = re.compile(r"pip install [^&;]*--no-deps ((?:[\w.-]+==[\w.]+ ?)+)")

Instruction = tuple[str, str]


@dataclass(frozen=True)
class Stage:
    """A ``FROM ... AS name`` stage: what it starts from (an image or another stage) and its instructions."""

    name: str
    base: str
    instructions: list[Instruction]


@dataclass(frozen=True)
class RoleInstall:
    """What an image target installs: the service's wheel with ``extras``, and ``no_deps`` without dependencies."""

    extras: tuple[str, ...]
    no_deps: tuple[str, ...]


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in CONTAINERFILE_PATH.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = (line.strip().split(maxsplit=1) for line in joined.splitlines() if line.strip())
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in pairs]


def stages() -> dict[str, Stage]:
    """Every named stage, in the file's order (the ARGs before the first FROM belong to none)."""
    found: dict[str, Stage] = {}
    for instruction, args in instructions():
        if instruction == "FROM":
            base, _as, name = args.split()
            found[name] = Stage(name, base, [])
        elif found:
            found[next(reversed(found))].instructions.append((instruction, args))
    return found


def target_instructions(target: str) -> list[Instruction]:
    """What an image target runs, from its base image on: the instructions of the stages it is built FROM."""
    chain = []
    known = stages()
    name = target
    while name in known:
        chain.append(known[name])
        name = known[name].base
    return [instruction for stage in reversed(chain) for instruction in stage.instructions]


def role_install(target: str) -> RoleInstall:
    """The extras and the dependency-less requirements ``target``'s RUN instructions install."""
    runs = " ".join(args for instruction, args in target_instructions(target) if instruction == "RUN")
    (extras,) = WHEEL_INSTALL.findall(runs)
    no_deps = [requirement for group in NO_DEPS_INSTALL.findall(runs) for requirement in group.split()]
    return RoleInstall(tuple(extras.split(",")), tuple(no_deps))


def requirement_names(extras: tuple[str, ...]) -> set[str]:
    """The distributions setup.cfg names for an install with ``extras``, following ``yolo-jobs[...]`` in them."""
    setup = configparser.ConfigParser()
    setup.read(SETUP_CFG_PATH)

    def declared(text: str) -> list[Requirement]:
        return [Requirement(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    requirements = declared(setup["options"]["install_requires"])
    pending, done = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in done:
            continue
        done.add(extra)
        for requirement in declared(setup["options.extras_require"][extra]):
            if requirement.name == "yolo-jobs":
                pending += requirement.extras
            else:
                requirements.append(requirement)
    return {requirement.name.lower() for requirement in requirements}
