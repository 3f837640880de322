"""One command-line override as Hydra reads it: parsed (its grammar errors said in one line, a
word without '=' read as what the user most likely meant),
checked against the options of its config group, and seen as the first job of a sweep sees it.
Only hydra is imported here (finetune.choices runs before torch)."""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import OverrideParseException

from finetune.errors import UserError

GRAMMAR = "write key=value, +key=value to add a key, ~key to remove one"
RUN_FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def unknown_choice(
    overrides: Sequence[Override], options: Mapping[str, Sequence[str]]
) -> str | None:
    """The message for the first `group=option` override naming an option that its group (in
    `options`: each group's options on the whole config search path) does not have. Every option
    of a sweep `data=scenes,cifar10` is checked; a glob is the sweeper's, and Hydra's own groups
    (hydra/launcher=...) are Hydra's to check (a missing plugin names its extra)."""
    for override in overrides:
        key = override.key_or_group
        if key not in options or key.split("/")[0] == "hydra" or override.is_delete():
            continue
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            continue
        if override.is_sweep_override():
            chosen = list(override.sweep_string_iterator())
        elif isinstance(override.value(), str):
            chosen = [override.value()]
        elif isinstance(override.value(), list):  # logger=[tensorboard,csv]: each option
            chosen = [str(option) for option in override.value()]
        else:  # null: no option of that group
            continue
        for option in chosen:
            if option not in options[key]:
                return f"unknown {key}={option}: choose one of {', '.join(options[key])}"
    return None


def parse_override(line: str) -> Override:
    """One override as Hydra reads it; its grammar errors in one line (with the quoted form
    where quotes fix it)."""
    try:
        override = OverridesParser.create().parse_overrides([line])[0]
    except OverrideParseException as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        reason = error.message.splitlines()
        reason = reason[1] if reason[0].startswith("Error parsing override") else reason[0]
        key, _, value = line.partition("=")
        if key.lstrip("+") in RUN_FOLDER_KEYS and value.startswith("~"):  # quoting would not do
            raise UserError(unexpanded_tilde(key.lstrip("+"), value)) from None
        lexer = reason.startswith("LexerNoViableAltException")
        quoted = _quoted(line) if lexer or "=" in value else None
        if quoted:  # characters Hydra reads only inside quotes (accents, spaces, '=', ...)
            raise UserError(
                f"bad override {line!r}: {reason}: quote the value, as in '{quoted}' (the outer "
                "single quotes are for the shell)"
            ) from None
        raise UserError(f"bad override {line!r}: {reason} ({GRAMMAR})") from None
    if not override.key_or_group:
        raise UserError(f"bad override {line!r}: no key before '=' ({GRAMMAR})")
    return override


def path_override(key: str, path: object) -> str:
    """`key=path` as Hydra reads it back: a path with characters its grammar gives a meaning
    (`=` and `,` of a ${hydra.job.override_dirname} folder, spaces, accents) is quoted."""
    plain = f"{key}={path}"
    try:
        OverridesParser.create().parse_overrides([plain])
        return plain
    except OverrideParseException:
        text = str(path).replace("\\", "\\\\").replace("'", "\\'")
        return f"{key}='{text}'"


def unexpanded_tilde(key: str, folder: str) -> str:
    """The line for a run folder given as ~/...: Hydra does not expand ~, the shell did not. The
    full path it suggests works typed in a shell and in run()'s list alike ($HOME would not)."""
    tilde = Path(folder).parts[0]  # ~ or ~user
    full = os.path.expanduser(folder)
    return (
        f"{key}={folder}: Hydra does not expand ~ and would make a folder named {tilde} here; "
        f"write the full path, as in {key}={full}"
    )


def parse_nth(lines: Sequence[str], i: int) -> Override:
    """Override i of the command line; a word without '=' is most often a mode typed alone
    (`python -m finetune train`) or an override split by spaces (`data.root = /x`)."""
    try:
        return parse_override(lines[i])
    except UserError:
        line, before = lines[i], lines[i - 1] if i else ""
        after, then = (list(lines[i + 1 : i + 3]) + ["", ""])[:2]
        if "=" in line:
            raise
        from finetune.tasks import TASKS  # light: the registry of modes, no torch

        if line in TASKS:
            raise UserError(f"bad override {line!r}: did you mean mode={line}?") from None
        if after == "=":  # the override as one word, by where the spaces were
            spaced = f"{line}={then}"
        elif after.startswith("="):
            spaced = line + after
        elif before.endswith("="):
            spaced = before + line
        else:
            raise
        raise UserError(
            f"bad override {line!r}: no spaces around '=': write {spaced} as one word"
        ) from None


def _quoted(line: str) -> str | None:
    """`line` with its value in quotes, if Hydra parses that (None: quotes do not help)."""
    key, equals, value = line.partition("=")
    for quote in ('"', "'") if equals and value else ():
        candidate = f"{key}={quote}{value}{quote}"
        try:
            OverridesParser.create().parse_overrides([candidate])
        except OverrideParseException:
            continue
        return candidate
    return None


def first_job(override: Override) -> str | None:
    """The override as the first job of a sweep sees it (None: left to the sweeper)."""
    if not override.is_sweep_override():
        return override.input_line
    if override.is_hydra_override():
        raise UserError(
            f"{override.input_line}: a sweep over Hydra's own settings is not supported"
        )
    key = override.get_key_element()
    if override.value_type == ValueType.INTERVAL_SWEEP:  # a search space for e.g. Optuna
        return f"{key}={override.value().start}"
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:  # group options the sweeper expands
        return None
    return f"{key}={next(iter(override.sweep_string_iterator()))}"
