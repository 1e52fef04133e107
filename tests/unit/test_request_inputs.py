"""A pipeline request's inputs checked at the edge: present where templates read them, of the declared types."""

import pytest

from compoundry.config.models import Pipeline, PipelineInput
from compoundry.core.request_inputs import problems

QUESTION = {"question": PipelineInput(type="string", max_length=10)}


@pytest.mark.parametrize(("inputs", "expected"), [
    ({"question": "where?"}, []),
    ({}, ["inputs.question is required"]),
    ({"question": None}, ["inputs.question is required"]),
    ({"question": 42}, ["inputs.question must be a string, got integer"]),
    ({"question": ["a"]}, ["inputs.question must be a string, got array"]),
    ({"question": {"a": 1}}, ["inputs.question must be a string, got object"]),
    ({"question": True}, ["inputs.question must be a string, got boolean"]),
    ({"question": "x" * 11}, ["inputs.question has 11 characters; at most 10"]),
    ({"question": "a \ud800 b"}, ["inputs.question holds an unpaired UTF-16 surrogate"]),
    ({"question": "ok", "extra": {"k": ["\udfff"]}}, ["inputs.extra.k[0] holds an unpaired UTF-16 surrogate"]),
])
def test_declared_inputs(inputs, expected):
    assert problems(inputs, QUESTION, {"question"}) == expected


def test_without_declarations_every_key_a_template_reads_is_required_of_any_type():
    assert problems({"q": 3}, {}, {"q"}) == []
    assert problems({}, {}, {"q", "user"}) == ["inputs.q is required", "inputs.user is required"]


def test_an_optional_input_may_be_absent_but_not_wrong():
    rules = {"limit": PipelineInput(type="integer", required=False)}
    assert problems({}, rules, {"limit"}) == []
    assert problems({"limit": 2.5}, rules, {"limit"}) == ["inputs.limit must be an integer, got number"]
    assert problems({"limit": True}, rules, set()) == ["inputs.limit must be an integer, got boolean"]


def test_the_pipeline_knows_which_request_keys_its_templates_read():
    pipeline = Pipeline(steps={"a": {"component": "c", "inputs": {"texts": ["${request.question}"]}},
                               "b": {"component": "c", "optional": True, "inputs": "${request.user.id}",
                                     "fallback": {"output": "${request.fallback_text}"}}},
                        output={"x": "${steps.a.y}", "lang": "${request.lang}"})
    assert pipeline.request_keys == {"question", "user", "fallback_text", "lang"}
