"""sbatch options a cluster profile passes through to every job of its runs (``sbatch:`` in
``configs/cluster/<name>.yaml`` or a user's own profile): the account and QOS to charge, node
constraints and exclusions, mail, and a few more from an allow-list. Checked when the profile is
loaded (plan time): a value is one line of printable text, ``extra`` names only allowed options;
submitit writes each as ``#SBATCH --name=<shell-quoted value>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")
EXTRA_OPTIONS = ("reservation", "licenses", "hint", "gres-flags", "begin", "nice", "wckey", "cluster-constraint", "mcs-label")
EXTRA_OPTION = re.compile(r"--(?P<name>[a-z][a-z-]*)(?:=(?P<value>.+))?", re.DOTALL)
PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


@dataclass
class SbatchOptions:
    account: Optional[str] = None  # --account: whom the allocation is charged to
    qos: Optional[str] = None
    constraint: Optional[str] = None  # node features, e.g. "1080ti&ib"
    exclude: Optional[str] = None  # nodes never to use, e.g. "tcml-node[7-8]"
    nodelist: Optional[str] = None
    mail_type: Optional[str] = None  # comma-separated, from MAIL_TYPES
    mail_user: Optional[str] = None
    extra: list[str] = field(default_factory=list)  # "--name=value" or "--flag", name from EXTRA_OPTIONS

    def parameters(self) -> dict[str, object]:
        """submitit's ``SlurmExecutor.update_parameters`` keywords for these options."""
        named = {key: value for key, value in vars(self).items() if key != "extra" and value is not None}
        extra = {match["name"]: match["value"] if match["value"] is not None else True for match in map(EXTRA_OPTION.fullmatch, self.extra) if match}
        return {**named, **({"additional_parameters": extra} if extra else {})}


def sbatch_problems(options: SbatchOptions) -> Iterator[tuple[str, object, str]]:
    """(key under ``sbatch.``, value found, what is accepted) of each option that cannot go to sbatch."""
    for key, value in vars(options).items():
        if key == "extra" or value is None:
            continue
        if not isinstance(value, str) or not PRINTABLE.fullmatch(value):
            yield key, value, "one line of printable text (no newlines or control characters), at most 512 characters"
    if options.mail_type is not None and not set(options.mail_type.split(",")) <= set(MAIL_TYPES):
        yield "mail_type", options.mail_type, "a comma-separated list of " + ", ".join(MAIL_TYPES)
    for index, option in enumerate(options.extra):
        match = EXTRA_OPTION.fullmatch(option) if isinstance(option, str) else None
        if match is None or match["name"] not in EXTRA_OPTIONS or not PRINTABLE.fullmatch(option):
            allowed = ", ".join(f"--{name}" for name in EXTRA_OPTIONS)
            yield f"extra[{index}]", option, f"--name=value (or --flag), one line, name one of {allowed}; account, qos, constraint, exclude, nodelist, mail_type and mail_user have keys of their own"
