"""Pipeline templating rules (docs/architecture.md, "Pipeline step templating"), by table."""

import pytest

from compoundry.core.templating import TemplateError, parse_path, render

CONTEXT = {
    "request": {"question": "where is order 42?", "n": 3, "tags": ["a", "b"], "user": {"id": "u-1"}},
    "steps": {
        "classify": {"predictions": [{"label": "order_status", "score": 0.9}]},
        "embed": {"embeddings": [[0.1, 0.2]], "dim": 2},
        "lookup": None,  # an optional step that failed without a fallback
        "my-step_2": {"ok": True},
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("${request.question}", "where is order 42?"),
        ("${request.n}", 3),  # whole-string template keeps the JSON type
        ("${request.tags}", ["a", "b"]),
        ("${request.user}", {"id": "u-1"}),
        ("${ request.n }", 3),  # whitespace inside the braces
        ("${steps.classify.predictions[0].label}", "order_status"),
        ("${steps.classify.predictions[-1].score}", 0.9),
        ("${steps.embed.embeddings}", [[0.1, 0.2]]),
        ("${steps.my-step_2.ok}", True),
        ("n=${request.n}", "n=3"),
        ("tags=${request.tags} user=${request.user}", 'tags=["a","b"] user={"id":"u-1"}'),
        ("Intent: ${steps.classify.predictions[0].label}.", "Intent: order_status."),
        ("${request.question}${request.n}", "where is order 42?3"),
        ("${steps.lookup}", None),  # a None step output
        ("${steps.lookup.predictions[0]}", None),  # reading through None is None, not an error
        ("found: ${steps.lookup.predictions}", "found: "),  # None interpolates as empty text
        ("flag ${steps.my-step_2.ok}", "flag true"),
        (42, 42),
        (None, None),
        (True, True),
    ],
)
def test_render_scalar_templates(template, expected):
    assert render(template, CONTEXT) == expected


def test_render_recurses_into_dicts_and_lists_without_touching_keys():
    value = {"texts": ["${request.question}", "static"], "${request.n}": {"k": "${request.n}"}, "x": 1.5}
    assert render(value, CONTEXT) == {"texts": ["where is order 42?", "static"], "${request.n}": {"k": 3}, "x": 1.5}


def test_render_does_not_mutate_the_template():
    value = {"a": ["${request.n}"]}
    render(value, CONTEXT)
    assert value == {"a": ["${request.n}"]}


@pytest.mark.parametrize(
    ("template", "path", "reason"),
    [
        ("${request.missing}", "request.missing", "no key 'missing'"),
        ("${steps.nope.x}", "steps.nope.x", "no key 'nope'"),
        ("${steps.classify.predictions[3].label}", "steps.classify.predictions[3].label", "out of range"),
        ("${steps.classify.predictions.label}", "steps.classify.predictions.label", "not an object"),
        ("${request.user[0]}", "request.user[0]", "not a list"),
        ("text ${request.question.x} more", "request.question.x", "not an object"),
        ("${nothing}", "nothing", "no key 'nothing'"),
    ],
)
def test_missing_paths_raise_a_template_error_naming_the_path(template, path, reason):
    with pytest.raises(TemplateError) as info:
        render(template, CONTEXT)
    assert info.value.path == path
    assert reason in str(info.value)
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("request.a", ("request", "a")),
        ("steps.x.key[0].label", ("steps", "x", "key", 0, "label")),
        ("steps.x[1][2]", ("steps", "x", 1, 2)),
        ("steps.a-b_c.d", ("steps", "a-b_c", "d")),
    ],
)
def test_parse_path(path, parts):
    assert parse_path(path) == parts


@pytest.mark.parametrize("path", ["", ".request", "request..a", "request.a[x]", "request[0]b", "[0]"])
def test_parse_path_rejects_bad_syntax(path):
    with pytest.raises(TemplateError):
        parse_path(path)
