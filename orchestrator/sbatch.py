"""sbatch options passed through to the jobs: a cluster profile's ``sbatch:`` (every job of the
cluster, checked when the profile is loaded) and a run's own ``resources.sbatch`` (checked when
its sweep is planned). Both are :class:`jobs.spec.SbatchOptions` with the same checks
(:func:`jobs.spec.sbatch_problems`: a value is one line of printable text, ``extra`` names only
allowed options); submitit writes each as ``#SBATCH --name=<shell-quoted value>``.

A job gets :func:`effective_sbatch`: the run's options key by key over the profile's.
"""

from __future__ import annotations

from dataclasses import replace

from jobs.spec import SbatchOptions, sbatch_extra_name, sbatch_problems

__all__ = ["SbatchOptions", "effective_sbatch", "sbatch_problems"]


def effective_sbatch(profile: SbatchOptions, run: SbatchOptions) -> SbatchOptions:
    """The options a run's jobs get: each of the run's options that is set replaces the profile's;
    ``extra`` is the profile's options the run does not name, then the run's (an option the run
    names replaces every one of that name of the profile)."""
    named = {key: value for key, value in vars(run).items() if key != "extra" and value is not None}
    run_names = {sbatch_extra_name(option) for option in run.extra}
    kept = [option for option in profile.extra if sbatch_extra_name(option) not in run_names]
    return replace(profile, **named, extra=[*kept, *run.extra])
