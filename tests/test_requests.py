import pytest

from wan_ui.core.errors import ValidationError
from wan_ui.core.requests import WORKLOADS, GenerationRequest, snap_frames, validate_request


def test_workloads_match_the_documented_token_counts():
    assert WORKLOADS["report"].request.tokens_per_forward() == 87_750
    assert WORKLOADS["official480"].request.tokens_per_forward() == 32_760


@pytest.mark.parametrize("n,expected", [(1, 1), (2, 1), (3, 5), (8, 9), (24, 25), (96, 97), (97, 97), (81, 81)])
def test_snap_frames(n, expected):
    assert snap_frames(n) == expected
    assert (snap_frames(n) - 1) % 4 == 0


def test_snap_is_reported_never_silent():
    req = validate_request(GenerationRequest("a dog", width=64, height=64, num_frames=24))
    assert req.num_frames == 25
    assert any("snapped to 25" in n for n in req.notes)
    same = validate_request(GenerationRequest("a dog", width=64, height=64, num_frames=25))
    assert same.notes == ()


@pytest.mark.parametrize("field,value,fragment", [
    ("prompt", "   ", "prompt must not be empty"),
    ("width", 100, "multiple of 16"),
    ("height", 8, "height must be in [16, 2048]"),
    ("width", 4096, "width must be in [16, 2048]"),
    ("num_inference_steps", 0, "num_inference_steps must be in [1, 200]"),
    ("guidance_scale", float("nan"), "guidance_scale must be in"),
    ("guidance_scale", 25, "guidance_scale must be in [0.0, 20.0]"),
    ("fps", 0, "fps must be in [1, 60]"),
    ("seed", -1, "seed must be in"),
    ("num_frames", "many", "num_frames must be a number"),
    ("num_inference_steps", 2.5, "whole number"),
])
def test_bad_fields_name_the_field_and_range(field, value, fragment):
    req = GenerationRequest("a dog", width=64, height=64, num_frames=9)
    import dataclasses

    with pytest.raises(ValidationError) as e:
        validate_request(dataclasses.replace(req, **{field: value}))
    assert e.value.field == field
    assert fragment in str(e.value)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValidationError, match="unknown request field"):
        GenerationRequest.from_dict({"prompt": "x", "colour": "red"})
    r = GenerationRequest.from_dict(GenerationRequest("x", notes=("a",)).to_dict())
    assert r.notes == ("a",)
