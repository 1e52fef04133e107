"""compoundry.config: the shipped configs validate; each broken config names its file, line and field."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from compoundry.cli.config_commands import config_app
from compoundry.config import ConfigError, ConfigIssue, load_config, load_model_file
from compoundry.config.base import DEFAULT_CONFIG_DIR
from compoundry.config.json_schema import json_schemas, render
from compoundry.config.models import ComponentsFile
from compoundry.config.platform_config import PlatformConfig

FILES = ("platform", "components", "pipelines", "experiments", "schedules")


@pytest.fixture
def configs(tmp_path) -> Path:
    """A copy of the shipped configs/ to break one file at a time."""
    target = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def edit(directory: Path, stem: str, old: str, new: str) -> int:
    """Replace ``old`` (which must occur once) by ``new``; return the 1-based line where ``new`` starts."""
    path = directory / f"{stem}.yaml"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    text = text.replace(old, new)
    path.write_text(text)
    return text[: text.index(new)].count("\n") + 1


def issues_of(directory: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    return caught.value.issues


def find(issues: list[ConfigIssue], field: str) -> ConfigIssue:
    matches = [i for i in issues if i.field == field]
    assert matches, f"no issue for {field}; got:\n" + "\n".join(map(str, issues))
    return matches[0]


# --------------------------------------------------------------------------- the shipped configs
def test_shipped_configs_validate():
    config = load_config()
    assert list(config.components) == ["embedder", "kb-retriever", "intent-classifier", "dialogue-llm", "sql-executor"]
    agent = config.pipelines["support-agent"]
    assert agent.levels() == [["embed", "classify"], ["retrieve", "lookup"], ["answer"]]
    assert agent.steps["lookup"].optional and agent.steps["lookup"].fallback.output == {"predictions": []}
    assert agent.components == ["embedder", "kb-retriever", "intent-classifier", "sql-executor", "dialogue-llm"]
    llm = config.components["dialogue-llm"]
    assert (llm.mode, llm.scaling.min_replicas, llm.engine_options) == ("dedicated", 1, {"max_new_tokens": 48})
    assert config.schedules["registry-poll"].cron == "*/2 * * * *"
    # platform.yaml spells out the defaults, plus an example blocked-terms category
    assert config.platform.gateway.blocked_terms == {"confidential": ["project nightingale"]}
    gateway_defaults = config.platform.gateway.model_copy(update={"blocked_terms": {}})
    assert config.platform.model_copy(update={"gateway": gateway_defaults}) == PlatformConfig()
    assert set(config.sources) == set(FILES)
    # plain Python values, not ruamel's commented containers (the executor serialises them)
    assert type(agent.steps["answer"].inputs["messages"]) is list
    assert type(agent.output) is dict


def test_env_var_picks_the_config_dir(configs, monkeypatch):
    edit(configs, "pipelines", "sla_ms: 8000", "sla_ms: 1234")
    monkeypatch.setenv("COMPOUNDRY_CONFIG_DIR", str(configs))
    assert load_config().pipelines["support-agent"].sla_ms == 1234


def test_minimal_component_gets_defaults(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  tiny:\n    model: m\n    engine: pyfunc\n")
    config = load_config(tmp_path)  # the other four files are optional
    tiny = config.components["tiny"]
    assert (tiny.alias, tiny.mode, tiny.scaling.max_replicas, tiny.breaker.error_rate) == ("champion", "serverless", 1, 0.5)
    assert config.pipelines == {} and config.experiments == {} and config.schedules == {}


def test_empty_file_is_an_empty_mapping(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  a: {model: m, engine: pyfunc}\n")
    (tmp_path / "experiments.yaml").write_text("# nothing running\n")
    assert load_config(tmp_path).experiments == {}


# --------------------------------------------------------------------------- rejections, one table
# (file, old text, new text, field path, message fragment[, text on the expected line]);
# the expected line is where `new` lands unless the last item names another line
REJECTIONS = [
    pytest.param("pipelines", "component: kb-retriever", "component: kb-retreiver",
                 "pipelines.support-agent.steps.retrieve.component", "unknown component 'kb-retreiver' (known: embedder,",
                 id="unknown-component-in-step"),
    pytest.param("pipelines", "fallback: {output: {predictions: []}}", "fallback: {component: sql-backup}",
                 "pipelines.support-agent.steps.lookup.fallback.component", "unknown component 'sql-backup'",
                 id="unknown-fallback-component"),
    pytest.param("pipelines", "depends_on: [retrieve, classify, lookup]", "depends_on: [retrive, classify, lookup]",
                 "pipelines.support-agent.steps.answer.depends_on",
                 "unknown step 'retrive' (known: embed, retrieve, classify, lookup, answer)", id="unknown-dependency"),
    pytest.param("pipelines", "depends_on: [embed]", "depends_on: [embed, answer]",
                 "pipelines.support-agent.steps.retrieve.depends_on",
                 "dependency cycle: retrieve -> answer -> retrieve", id="cycle"),
    pytest.param("pipelines", "depends_on: [embed]\n        inputs:", "depends_on: []\n        inputs:",
                 "pipelines.support-agent.steps.retrieve.inputs.data",
                 "step 'embed' is not in depends_on of 'retrieve'", 'inputs: {data: "${steps.embed',
                 id="template-reads-non-dependency"),
    pytest.param("pipelines", '"${steps.answer.text}"', '"${steps.anser.text}"',
                 "pipelines.support-agent.output.answer", "unknown step 'anser'", id="output-unknown-step"),
    pytest.param("pipelines", '{texts: ["${request.question}"]}', '{texts: ["${reqest.question}"]}',
                 "pipelines.support-agent.steps.embed.inputs.texts[0]", "must start with 'request.'",
                 id="template-bad-root"),
    pytest.param("pipelines", "optional: true\n", "optional: false\n",
                 "pipelines.support-agent.steps.lookup.fallback", "only allowed on a step with optional: true",
                 "fallback: {output:",
                 id="fallback-on-required-step"),
    pytest.param("pipelines", "sla_ms: 8000", "sla_ms: 0", "pipelines.support-agent.sla_ms", "greater than 0",
                 id="zero-sla"),
    pytest.param("pipelines", "timeout_s: 30", "timeout: 30", "pipelines.support-agent.steps.answer.timeout",
                 "unknown key (allowed: component, description, depends_on,", id="unknown-key-in-step"),
    pytest.param("schedules", 'cron: "0 7 * * 1-5"', 'cron: "0 25 * * 1-5"', "schedules.weekday-morning-warmup.cron",
                 "invalid cron expression '0 25 * * 1-5'", id="bad-cron"),
    pytest.param("schedules", "flow: cost-report", "flow: cost-reports", "schedules.nightly-cost-report.flow",
                 "unknown flow 'cost-reports' (known: registry-poll,", id="unknown-flow"),
    pytest.param("schedules", "timezone: UTC", "timezone: Mars/Olympus", "schedules.registry-poll.timezone",
                 "unknown timezone", id="bad-timezone"),
    pytest.param("schedules", "pipelines: [support-agent]", "pipelines: [support-agnet]",
                 "schedules.weekday-morning-warmup.parameters.pipelines", "unknown pipeline 'support-agnet'",
                 id="schedule-unknown-pipeline"),
    pytest.param("experiments", "alias: challenger, weight: 10", "alias: challenger, weight: 20",
                 "experiments.embedder-ab.variants", "variant weights sum to 110, they must sum to 100", "    variants:",
                 id="weights-not-100"),
    pytest.param("experiments", "component: embedder", "component: embeder", "experiments.embedder-ab.component",
                 "unknown component 'embeder'", id="experiment-unknown-component"),
    pytest.param("experiments", "{name: challenger, alias: challenger,", "{name: challenger, version: 3, alias: challenger,",
                 "experiments.embedder-ab.variants[1]", "exactly one of 'alias' or 'version'", id="alias-and-version"),
    pytest.param("experiments", "{name: challenger,", "{name: champion,", "experiments.embedder-ab.variants",
                 "duplicate variant name(s): champion", "    variants:", id="duplicate-variant"),
    pytest.param("experiments", "variant: challenger, fraction: 0.0", "variant: challenger, fraction: 1.5",
                 "experiments.embedder-ab.shadow.fraction", "less than or equal to 1", id="shadow-fraction"),
    pytest.param("components", "max_replicas: 2, target_concurrency: 8,", "max_replicas: 2, target_concurrency: 0,",
                 "components.embedder.scaling.target_concurrency", "greater than 0", id="zero-concurrency"),
    pytest.param("components", "min_replicas: 1, max_replicas: 2", "min_replicas: 3, max_replicas: 2",
                 "components.dialogue-llm.scaling.max_replicas", "max_replicas (2) must be >= min_replicas (3)",
                 id="max-below-min"),
    pytest.param("components", "timeouts: {request_s: 10,", "timeouts: {request_s: -1,",
                 "components.embedder.timeouts.request_s", "greater than 0", id="negative-timeout"),
    pytest.param("components", "error_rate: 0.5, window_s: 30, cooldown_s: 15}\n    prices: {replica_hour: 0.40",
                 "error_rate: 1.5, window_s: 30, cooldown_s: 15}\n    prices: {replica_hour: 0.40",
                 "components.embedder.breaker.error_rate", "less than or equal to 1", id="error-rate-above-1"),
    pytest.param("components", "prices: {replica_hour: 2.50", "prices: {replica_hour: -2.50",
                 "components.dialogue-llm.prices.replica_hour", "greater than or equal to 0", id="negative-price"),
    pytest.param("components", "engine: llm ", "engine: vllm ", "components.dialogue-llm.engine",
                 "got 'vllm'", id="unknown-engine"),
    pytest.param("components", "  sql-executor:", "  SQL_executor:", "components.SQL_executor",
                 "must be lowercase letters, digits and dashes", id="bad-component-name"),
    pytest.param("components", "    alias: champion ", "    replicas: 3\n    alias: champion ", "components.embedder.replicas",
                 "unknown key (allowed: description, model, alias, engine, mode,", id="unknown-key-in-component"),
    pytest.param("platform", "  gateway: 8000", "  gatway: 8000", "ports.gatway",
                 "unknown key (allowed: mlflow, prefect, gateway)", id="unknown-key-in-platform"),
]


def line_with(path: Path, text: str) -> int:
    content = path.read_text()
    assert content.count(text) == 1, f"{text!r} occurs {content.count(text)} times in {path}"
    return content[: content.index(text)].count("\n") + 1


@pytest.mark.parametrize("stem, old, new, field, message, at",
                         [pytest.param(*p.values, *([None] * (6 - len(p.values))), id=p.id) for p in REJECTIONS])
def test_rejections_name_file_line_and_field(configs, stem, old, new, field, message, at):
    line = edit(configs, stem, old, new)
    if at is not None:
        line = line_with(configs / f"{stem}.yaml", at)
    issue = find(issues_of(configs), field)
    assert issue.file == str(configs / f"{stem}.yaml")
    assert issue.line == line
    assert message in issue.message, str(issue)


def test_malformed_yaml_reports_the_line(configs):
    line = edit(configs, "components", "    model: compoundry-kb-retriever", "   model: compoundry-kb-retriever")
    issues = issues_of(configs)
    assert [(i.file, i.line, i.field) for i in issues] == [(str(configs / "components.yaml"), line, "(yaml)")]
    assert issues[0].message.startswith("invalid YAML:")


def test_unclosed_flow_sequence(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  a:\n    model: [m\n    engine: pyfunc\n")
    (issue,) = issues_of(tmp_path)
    assert (issue.line, issue.field) == (4, "(yaml)") and "expected ',' or ']'" in issue.message


def test_missing_required_key_points_at_its_parent(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  a:\n    engine: pyfunc\n")
    (issue,) = issues_of(tmp_path)
    assert (issue.line, issue.field, issue.message) == (2, "components.a.model", "required key is missing")


def test_empty_pipeline_and_duplicate_experiment(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  a: {model: m, engine: pyfunc}\n")
    (tmp_path / "pipelines.yaml").write_text("pipelines:\n  p:\n    steps: {}\n")
    (tmp_path / "experiments.yaml").write_text(
        "experiments:\n"
        "  one: {component: a, variants: [{name: x, alias: champion, weight: 100}]}\n"
        "  two: {component: a, variants: [{name: y, version: 2, weight: 100}]}\n")
    issues = issues_of(tmp_path)
    assert [(i.line, i.field) for i in issues] == [(3, "pipelines.p.steps"), (3, "experiments.two.component")]
    assert issues[0].message == "a pipeline needs at least one step"
    assert "already has an enabled experiment 'one'" in issues[1].message


def test_top_level_not_a_mapping(configs):
    (configs / "components.yaml").write_text("- embedder\n- dialogue-llm\n")
    issues = issues_of(configs)  # and no cascade of 'unknown component' from pipelines.yaml
    assert [(i.line, i.field) for i in issues] == [(1, "(top level)")]
    assert "valid dictionary" in issues[0].message


def test_missing_components_file(tmp_path):
    (issue,) = issues_of(tmp_path)
    assert (issue.file, issue.line, issue.field, issue.message) == (
        str(tmp_path / "components.yaml"), None, "(file)", "file not found")


def test_all_issues_of_all_files_at_once(configs):
    edit(configs, "schedules", 'cron: "*/2 * * * *"', 'cron: "nope"')
    edit(configs, "experiments", "weight: 90", "weight: 80")
    edit(configs, "pipelines", "component: intent-classifier", "component: intent")
    fields = {i.field for i in issues_of(configs)}
    assert {"schedules.registry-poll.cron", "experiments.embedder-ab.variants",
            "pipelines.support-agent.steps.classify.component"} <= fields


def test_invalid_components_file_does_not_cascade(configs):
    """A broken components.yaml must not make every step report 'unknown component'."""
    edit(configs, "components", "engine: pyfunc                      # MLflow", "engine: 7  # MLflow")
    issues = issues_of(configs)
    assert [i.field for i in issues] == ["components.kb-retriever.engine"]


def test_error_text_is_one_line_per_issue_relative_to_cwd(configs, monkeypatch):
    line = edit(configs, "pipelines", "depends_on: [retrieve, classify, lookup]", "depends_on: [retrive, classify, lookup]")
    monkeypatch.chdir(configs.parent)
    with pytest.raises(ConfigError) as caught:
        load_config(configs)
    first = str(caught.value).splitlines()[0]
    assert first == (f"configs/pipelines.yaml:{line}: pipelines.support-agent.steps.answer.depends_on: "
                     "unknown step 'retrive' (known: embed, retrieve, classify, lookup, answer)")


def test_config_error_pickles(configs):
    edit(configs, "pipelines", "sla_ms: 8000", "sla_ms: -1")
    err = pytest.raises(ConfigError, load_config, configs).value
    again = pickle.loads(pickle.dumps(err))
    assert again.issues == err.issues and str(again) == str(err)


def test_load_model_file(tmp_path):
    path = tmp_path / "components.yaml"
    path.write_text("components:\n  a: {model: m, engine: pyfunc, mode: sometimes}\n")
    with pytest.raises(ConfigError) as caught:
        load_model_file(path, ComponentsFile)
    assert [(i.line, i.field) for i in caught.value.issues] == [(2, "components.a.mode")]
    path.write_text("")
    assert load_model_file(path, ComponentsFile).components == {}
    with pytest.raises(ConfigError, match="file not found"):
        load_model_file(tmp_path / "nope.yaml", PlatformConfig)


# --------------------------------------------------------------------------- JSON Schema
def test_shipped_schema_files_are_current():
    for stem, schema in json_schemas().items():
        path = DEFAULT_CONFIG_DIR / "schema" / f"{stem}.schema.json"
        assert path.read_text() == render(schema), f"{path} is stale: run `compoundry config schema`"


@pytest.mark.parametrize("stem", FILES)
def test_shipped_configs_match_their_schema_and_point_at_it(stem):
    path = DEFAULT_CONFIG_DIR / f"{stem}.yaml"
    first = path.read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema=./schema/{stem}.schema.json"
    data = json.loads(json.dumps(YAML(typ="safe").load(path.read_text())))
    jsonschema.validate(data, json_schemas()[stem])


# --------------------------------------------------------------------------- CLI
def test_cli_validate_ok():
    result = CliRunner().invoke(config_app, ["validate", "--config-dir", str(DEFAULT_CONFIG_DIR)])
    assert result.exit_code == 0, result.output
    assert "support-agent" in result.output and "dialogue-llm" in result.output and "OK" in result.output


def test_cli_validate_broken(configs):
    line = edit(configs, "schedules", 'cron: "0 7 * * 1-5"', 'cron: "0 7 * * funday"')
    result = CliRunner().invoke(config_app, ["validate", "--config-dir", str(configs)])
    assert result.exit_code == 1
    assert f"{configs / 'schedules.yaml'}:{line}: schedules.weekday-morning-warmup.cron: invalid cron" in result.output
    assert "Traceback" not in result.output


def test_cli_schema_writes_files(tmp_path):
    result = CliRunner().invoke(config_app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.schema.json" for s in FILES)
    assert json.loads((tmp_path / "pipelines.schema.json").read_text())["title"] == "compoundry pipelines.yaml"


def test_blocked_terms_that_no_trust_hook_applies_are_an_error_at_their_line(configs):
    edit(configs, "pipelines", "    trust: {pre: [mask_pii, block_terms]}", "    trust: {pre: [mask_pii]}")
    [issue] = issues_of(configs)
    text = (configs / "platform.yaml").read_text()
    assert issue.file.endswith("platform.yaml") and issue.field == "gateway.blocked_terms"
    assert issue.line == text[: text.index("  blocked_terms:")].count("\n") + 1
    assert "block nothing" in issue.message


def test_declared_inputs_must_cover_every_request_key_a_template_reads(configs):
    at = edit(configs, "pipelines", "      question: {type: string, max_length: 4000}",
              "      topic: {type: string}")
    [issue] = issues_of(configs)
    assert issue.field == "pipelines.support-agent.inputs" and issue.line == at - 1
    assert "templates read request.question, which inputs does not declare (known: topic)" in issue.message


def test_gateway_workers_default_to_one_per_core_and_the_environment_overrides(tmp_path, monkeypatch):
    import os

    from compoundry.config.settings import PlatformSettings

    monkeypatch.delenv("COMPOUNDRY_GATEWAY_WORKERS", raising=False)
    assert PlatformSettings.load(tmp_path).gateway_workers == (os.cpu_count() or 1)
    (tmp_path / "platform.yaml").write_text("gateway: {workers: 3}\n")
    assert PlatformSettings.load(tmp_path).gateway_workers == 3
    monkeypatch.setenv("COMPOUNDRY_GATEWAY_WORKERS", "1")
    assert PlatformSettings.load(tmp_path).gateway_workers == 1
