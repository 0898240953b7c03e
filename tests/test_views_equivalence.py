"""``orch status``, ``runs`` and ``export`` print what they printed before they became set-based.

tests/reference_views.py is a frozen copy of the read side as it was (an ORM object per run, each
spec parsed from its YAML in Python). On one populated home (sweeps sharing runs; runs completed,
running, pending, failed and planned, with attempts, metrics at several steps and checkpoints;
specs that lack a key, hold a section's key inside another section, or belong to no sweep) each
command's output is compared with what that copy gives on the same registry, after the command.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator import views
from orchestrator.fingerprint import SectionTexts
from orchestrator.home import OrchHome
from orchestrator.registry.engine import open_registry
from orchestrator.registry.models import Attempt, Run, RunState, SpecSection, Sweep, SweepRun
from orchestrator.submit import record_sections, section_ids_text
from orchestrator.views import WhereClause
from tests import reference_views as reference
from tests.conftest import BACKENDS, OpenRegistry, Orch, write_sweep

BASE = """include: [problems/digits_mlp.yaml]
base:
  model: {{hidden: [16]}}
  training: {{steps: 20, checkpoint_every: 10, eval_every: 10, heartbeat_seconds: 0.2}}
{more}grid:
  {grid}
"""
SWEEPS = {  # submitted in this order; "alpha" twice, the second time with another grid
    "alpha": BASE.format(more="", grid="optimizer.lr: [0.1, 0.05]"),
    "beta": BASE.format(more="", grid="optimizer.lr: [0.05, 0.2]"),  # shares lr 0.05 with alpha
    "alpha-again": BASE.format(more="", grid="optimizer.lr: [0.02, 0.05]"),  # a new run at position 0
    "gamma": """include: [problems/digits_mlp.yaml]
base:
  training: {steps: 20, checkpoint_every: 10, eval_every: 10, heartbeat_seconds: 0.2}
  optimizer: {momentum: 0.9, nesterov: true}
  probes:
    - {type: line, every: 10}
grid:
  model.hidden: [[16], [8, 8]]
""",
}

WHERE = [
    ["optimizer.lr=0.05"],
    ["optimizer.lr=0.1"],
    ["optimizer.lr=0.050"],
    ["optimizer.lr=1"],
    ["training.steps=20"],
    ["training.steps=20.0"],
    ["training.steps=21"],
    ["training.seed=0"],
    ["training.seed=false"],
    ["training.seed=null"],
    ["model.name=mlp"],
    ["model.name=MLP"],
    ["model.name='0.1'"],
    ["optimizer.nesterov=true"],
    ["optimizer.nesterov=1"],
    ["optimizer.nesterov=1.0"],
    ["optimizer.nesterov=false"],
    ["optimizer.nesterov=0"],
    ["optimizer.momentum=0.9"],
    ["optimizer.momentum=0"],
    ["model.hidden=[16]"],
    ["model.hidden=[16.0]"],
    ["model.hidden=[true]"],
    ["model.hidden=[8, 8]"],
    ["model.hidden=[8]"],
    ["model.hidden=[]"],
    ["model.hidden=16"],
    ["model.hidden={a: 1}"],
    ["model.dropout=null"],
    ["data.root=null"],
    ["data.mean=[]"],
    ["probes=[]"],
    ["probes[0].every=10"],
    ["probes[0].every=10.0"],
    ["probes[0].type=line"],
    ["probes[0].name=null"],
    ["probes[1].every=10"],
    ["optimizer.lr=.nan"],
    ["optimizer.lr=.inf"],
    ["optimizer.lr=0.05", "model.hidden=[16]"],
    ["optimizer.lr=0.05", "training.steps=21"],
]


@pytest.fixture(scope="module", params=BACKENDS)
def home(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Orch]:
    """The same home on each backend: the views' SQL (JSON paths, ordering) differs by dialect."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ORCH_DB_URL", raising=False)
        patch.delenv("ORCH_HOME", raising=False)
        folder = tmp_path_factory.mktemp("views")
        url = (
            None
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_server").create_database()
        )
        orch = Orch(folder / "home", url)
        if url is not None:
            patch.setenv("ORCH_DB_URL", url)
        for file_name, text in SWEEPS.items():
            name = file_name.removesuffix("-again")
            orch.ok("submit", write_sweep(folder, file_name, f"name: {name}\n{text}"), "--executor", "debug")
        with Session(open_registry(OrchHome(orch.home))) as session, session.begin():
            change_states(session)
            add_odd_runs(session)
        yield orch


def runs_by_swept(session: Session, sweep: str) -> dict[str, Run]:
    members = session.scalars(select(SweepRun).join(Sweep).where(Sweep.name == sweep)).all()
    return {json.dumps(member.swept_json and json.loads(member.swept_json)): member.run for member in members}


def change_states(session: Session) -> None:
    """Active and failed runs, as sync would leave them: a run's state is its last attempt's. The
    active attempts ran on another host, so that the commands' own sync leaves them as they are."""
    alpha = runs_by_swept(session, "alpha")
    gamma = runs_by_swept(session, "gamma")
    running = alpha[json.dumps({"optimizer.lr": 0.1})]  # position 0 of alpha, like lr 0.02
    pending = alpha[json.dumps({"optimizer.lr": 0.02})]
    shared = alpha[json.dumps({"optimizer.lr": 0.05})]  # also in beta
    for run, state, steps_per_second in (
        (running, RunState.RUNNING, 2.5),
        (pending, RunState.PENDING, None),
        (shared, RunState.RUNNING, None),
    ):
        number = len(run.attempts) + 1
        run.attempts.append(
            Attempt(
                number=number,
                key=f"{run.id}-{number}-test",
                executor="local",
                submission_id="test",
                job_id=f"90{number}",
                hostname="elsewhere.invalid",
                pid=4242,
                state=state,
                submitted_time=1.0,
                started_time=2.0,
                steps_per_second=steps_per_second,
                journal_dir=f"/nonexistent/{run.id}/{number}",
                reason="waiting" if state == RunState.PENDING else None,
            )
        )
        run.state, run.current_step = state, 7
    failed = gamma[json.dumps({"model.hidden": [8, 8]})]
    failed.attempts[-1].state = failed.state = RunState.FAILED
    failed.attempts[-1].reason = "training loss is nan"


def add_odd_runs(session: Session) -> None:
    """Runs recorded by other means (an older orch, another tool): planned, without a key, with
    a section's key inside another section, in no sweep, recorded at the same time as another."""
    template = runs_by_swept(session, "gamma")[json.dumps({"model.hidden": [16]})]
    spec = json.loads(template.spec_json)
    gamma = session.scalar(select(Sweep).where(Sweep.name == "gamma"))
    without_momentum = copy.deepcopy(spec)
    del without_momentum["optimizer"]["momentum"]
    without_momentum["training"]["seed"] = 7
    nested_key = copy.deepcopy(spec)
    nested_key["model"]["data"] = {"name": "inner", "hidden": [1.5, None]}
    nested_key["cluster"] = 'slurm, "cluster": x'
    reordered = {
        "cluster": spec["cluster"],
        **{key: value for key, value in spec.items() if key != "cluster"},
    }
    odd = [
        ("0dd0000000000001", without_momentum, template.created_time, gamma, {"training.seed": 7}),
        ("0dd0000000000002", nested_key, 1.0, gamma, {"model.hidden": [16], "optimizer.lr": 0.5}),
        ("0dd0000000000003", reordered, template.created_time + 1, None, None),
    ]
    for run_id, run_spec, created_time, sweep, swept in odd:
        # in the spec's own order, as migration 0006 records them
        sections = [SectionTexts(name, value) for name, value in run_spec.items()]
        run = Run(
            id=run_id,
            canonical_json="{}",
            spec_json=json.dumps(run_spec),
            section_ids=section_ids_text(sections, record_sections(session, sections)),
            state=RunState.PLANNED,
            total_steps=20,
            current_step=0,
            created_time=created_time,
        )
        session.add(run)
        if sweep is not None:
            session.add(
                SweepRun(sweep=sweep, run=run, position=len(sweep.members), swept_json=json.dumps(swept))
            )


def reference_session(orch: Orch) -> Session:
    return Session(create_engine(orch.url))


def test_the_home_has_what_the_comparisons_need(home: Orch) -> None:
    with reference_session(home) as session:
        states = {run.state for run in session.scalars(select(Run))}
        shared = [run for run in session.scalars(select(Run)) if len(run.memberships) > 1]
    assert states == {
        RunState.COMPLETED,
        RunState.RUNNING,
        RunState.PENDING,
        RunState.FAILED,
        RunState.PLANNED,
    }
    assert shared


@pytest.mark.parametrize("sweep", [None, "alpha", "gamma"])
def test_status_is_as_before(home: Orch, sweep: str | None) -> None:
    shown = home.ok("status", "--json", *([sweep] if sweep else [])).stdout
    with reference_session(home) as session:
        assert shown == reference.print_json_text(reference.status_view(session, sweep))
    assert sweep == "gamma" or any(view["active"] for view in json.loads(shown))


@pytest.mark.parametrize("where", WHERE, ids=lambda where: " ".join(where))
def test_runs_where_is_as_before(home: Orch, where: list[str]) -> None:
    _assert_runs_as_before(home, None, None, where)


@pytest.mark.parametrize("few_runs", [views.IN_CHUNK, 1], ids=["one-chunk", "chunks-of-one"])
@pytest.mark.parametrize(
    ("sweep", "state"),
    [(None, None), ("alpha", None), ("beta", None), ("gamma", "planned"), (None, "RUNNING")],
)
def test_runs_of_a_sweep_or_state_are_as_before(
    home: Orch, sweep: str | None, state: str | None, few_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "IN_CHUNK", few_runs)  # how many runs' memberships are read by one query
    _assert_runs_as_before(home, sweep, state, [])
    _assert_runs_as_before(home, sweep, state, ["model.hidden=[16]"])


@pytest.mark.parametrize(
    "command", [["runs", "--sweep", "nope"], ["export", "--sweep", "nope"], ["status", "nope"]]
)
def test_an_unknown_sweep_is_bad_input_naming_the_known_ones(home: Orch, command: list[str]) -> None:
    """Before, runs and export printed nothing for a sweep name with a typo: now they say so."""
    result = home(*command, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        "no sweep named 'nope' in registry" in result.stderr
        and "accepted: alpha, beta, gamma" in result.stderr
    )


def test_a_where_on_a_list_of_mappings_is_as_before(home: Orch) -> None:
    with reference_session(home) as session:
        probes = next(
            json.loads(run.spec_json)["probes"]
            for run in session.scalars(select(Run))
            if "line" in run.spec_json
        )
    _assert_runs_as_before(home, None, None, [f"probes={json.dumps(probes)}"])
    probes[0]["every"] = 11
    _assert_runs_as_before(home, None, None, [f"probes={json.dumps(probes)}"])


def _assert_runs_as_before(orch: Orch, sweep: str | None, state: str | None, where: list[str]) -> None:
    options = [
        *(["--sweep", sweep] if sweep else []),
        *(["--state", state] if state else []),
        *(option for clause in where for option in ("--where", clause)),
    ]
    shown = orch.ok("runs", "--json", *options).stdout
    clauses = [(clause.key, clause.value) for clause in map(WhereClause.parse, where)]
    with reference_session(orch) as session:
        expected = [reference.run_row(run) for run in reference.select_runs(session, sweep, state, clauses)]
        # the analyses' selection
        selected = [
            run.id for run in views.select_runs(session, sweep, state, list(map(WhereClause.parse, where)))
        ]
    assert shown == reference.print_json_text(expected)
    assert selected == [row["id"] for row in expected]


@pytest.mark.parametrize("sweep", [None, "gamma", "beta"])
@pytest.mark.parametrize("export_format", ["json", "csv"])
def test_export_as_text_is_as_before(home: Orch, export_format: str, sweep: str | None) -> None:
    shown = home.ok("export", "--format", export_format, *(["--sweep", sweep] if sweep else [])).stdout
    assert shown == _reference_export(home, sweep, export_format).decode()


def test_export_to_a_file_is_as_before(home: Orch, tmp_path: Path) -> None:
    home.ok("export", "--json", "--out", tmp_path / "runs.json")
    assert (tmp_path / "runs.json").read_bytes() == _reference_export(home, None, "json")


@pytest.mark.parametrize("sweep", [None, "gamma", "beta"])
def test_export_as_parquet_reads_back_as_before(home: Orch, tmp_path: Path, sweep: str | None) -> None:
    home.ok(
        "export",
        "--format",
        "parquet",
        "--out",
        tmp_path / "runs.parquet",
        *(["--sweep", sweep] if sweep else []),
    )
    shown = pq.read_table(tmp_path / "runs.parquet")
    expected = pq.read_table(io.BytesIO(_reference_export(home, sweep, "parquet")))
    assert shown.schema == expected.schema
    assert shown.equals(expected)


def test_export_has_the_odd_runs_and_every_kind_of_column(home: Orch) -> None:
    rows: list[dict[str, Any]] = json.loads(home.ok("export", "--json").stdout)
    assert rows[0]["id"] == "0dd0000000000002" and rows[0]["config.model.data.name"] == "inner"
    assert {row["sweep"] for row in rows} >= {"", "gamma", "alpha,beta"}
    assert any("final.val_accuracy" not in row for row in rows) and any(
        "final.val_accuracy" in row for row in rows
    )


def _reference_export(orch: Orch, sweep: str | None, export_format: str) -> bytes:
    with reference_session(orch) as session:
        rows = reference.export_rows(session, reference.select_runs(session, sweep, None, []))
    return reference.encode_rows(rows, export_format)


def test_specs_flattened_section_by_section_flatten_as_a_whole(
    tmp_path: Path, new_registry: OpenRegistry
) -> None:
    """A run's ``config.*`` columns, put together from its sections (each distinct one recorded
    and flattened once), are what flattening the whole spec gives: also for texts that look like
    section keys, sections in another order or missing, and numbers that compare equal."""
    base = {
        "model": {"name": "mlp", "hidden": [16]},
        "data": {"name": "digits"},
        "optimizer": {"lr": 0.1},
        "training": {"seed": 0},
        "probes": [],
        "resources": {"time": "1:00"},
        "container": {"binds": []},
        "cluster": "local",
    }
    variants = [
        base,
        {**base, "optimizer": {"lr": 0.05}},
        {**base, "optimizer": {"lr": 0.05}, "training": {"seed": 1}},
        {
            **base,
            "model": {"name": 'mlp", "data": {"name": 1}', "hidden": [16]},
        },  # a key's text inside a string
        {**base, "model": {"name": "mlp", "data": {"name": "inner"}}},  # a section's key nested in another
        {**base, "optimizer": {"lr": 0.1, "schedule": {}}, "probes": [{"type": "line", "every": 5}]},
        {**base, "cluster": 'local"}'},
        {key: base[key] for key in reversed(base)},  # sections in another order
        {key: value for key, value in base.items() if key != "probes"},  # a section missing
        base,
        {**base, "optimizer": {"lr": 0.100}},
        {**base, "optimizer": {"lr": 1}},
        {**base, "optimizer": {"lr": 10}},
    ]
    engine = new_registry(tmp_path)
    with Session(engine) as session, session.begin():
        recorded = []
        for spec in variants:
            sections = [SectionTexts(name, value) for name, value in spec.items()]
            recorded.append(
                (spec, json.loads(section_ids_text(sections, record_sections(session, sections))))
            )
        connection = session.connection()
        groups = views.section_groups(
            connection, {section_id for _, ids in recorded for section_id in ids.values()}
        )
        distinct = connection.execute(select(func.count()).select_from(SpecSection)).scalar()
    for spec, ids in recorded:
        assert list(ids) == list(spec)
        columns = [column for section_id in ids.values() for column in groups[section_id].columns]
        values = [value for section_id in ids.values() for value in groups[section_id].values]
        expected = {
            f"config.{key}": json.dumps(value) if isinstance(value, list) else value
            for key, value in reference.flat_spec_of(spec).items()
        }
        assert dict(zip(columns, values)) == expected and columns == list(expected), spec
    # 0.1 and 0.100 are one section
    assert distinct == len({json.dumps({name: value}) for spec in variants for name, value in spec.items()})


OPERATOR_WHERE = [  # clauses, and how many of the home's 9 runs they select
    (["optimizer.lr>0.05"], 7),
    (["optimizer.lr>=0.05"], 8),
    (["optimizer.lr<0.1"], 2),
    (["optimizer.lr<=0.1"], 8),
    (["optimizer.lr!=0.05"], 8),
    (["optimizer.momentum>0"], 4),
    (["optimizer.nesterov>0"], 0),  # true is no number to compare
    (["training.seed<1"], 8),
    (["training.seed!=0", "optimizer.lr>0.01"], 1),
    (["model.hidden in ([16], [8, 8])"], 9),
    (["optimizer.lr in (0.05, 0.5, 1)"], 1),
    (["model.name in (mlp, cnn)"], 9),
    (["model.name!=mlp"], 0),
    (["model.hidden!=[16]"], 1),
    (["probes!=[]"], 5),
    (["optimizer.schedule.name!=null"], 9),
    (["model.hidden in ([16], [1.5])"], 8),
    (["cluster in (local)"], 8),
]


@pytest.mark.parametrize(
    ("where", "count"), OPERATOR_WHERE, ids=[" ".join(where) for where, _ in OPERATOR_WHERE]
)
def test_runs_where_with_operators_selects_what_the_clauses_hold_for(
    home: Orch, where: list[str], count: int
) -> None:
    """Comparisons, inequality and sets, decided once per distinct section in SQL and Python,
    select the runs whose whole spec (flattened as --where sees it) satisfies every clause."""
    clauses = [WhereClause.parse(text) for text in where]
    shown = [
        run["id"]
        for run in home.ok(
            "runs", "--json", *(option for text in where for option in ("--where", text))
        ).json()
    ]
    with reference_session(home) as session:
        runs = session.scalars(select(Run).order_by(Run.created_time, Run.id)).all()
        expected = [
            run.id
            for run in runs
            if all(clause.matches(views.where_view(json.loads(run.spec_json))) for clause in clauses)
        ]
        # the analyses' selection
        selected = [run.id for run in views.select_runs(session, None, None, clauses)]
    assert shown == expected == selected
    assert (len(shown), len(runs)) == (count, 9)


def test_export_selects_the_runs_that_runs_lists(home: Orch) -> None:
    """export takes runs' --sweep, --state and --where: the same runs, the same rows as unselected."""
    options = ["--sweep", "alpha", "--where", "optimizer.lr>=0.05", "--where", "training.steps<=20"]
    listed = [run["id"] for run in home.ok("runs", "--json", *options).json()]
    exported = json.loads(home.ok("export", "--json", *options).stdout)
    everything = {row["id"]: row for row in json.loads(home.ok("export", "--json").stdout)}
    assert [row["id"] for row in exported] == listed and exported == [everything[run_id] for run_id in listed]
    assert 0 < len(listed) < len(everything)
