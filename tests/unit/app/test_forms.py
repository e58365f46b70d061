"""Reading a submission's fields: each bad value is a 400 with the field's name; good ones come out typed."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from app.errors import ApiError
from app.forms import (
    FLOAT32_SMALLEST_NORMAL,
    MAX_CALLBACK_URL_LENGTH,
    clean_filename,
    json_body_limit,
    parse_callback_url,
    parse_file_ids,
    parse_param_changes,
    parse_params,
    read_json_fields,
    status_filter,
    whole_number,
)
from config import Settings
from jobs.lifecycle import JobParams

SETTINGS = Settings.from_env({"YOLO_MODELS": "coco=/m/yolo11n.pt"})


def test_parameters_default_and_name_the_registry_model() -> None:
    assert parse_params({}, SETTINGS) == JobParams(model="shapes")
    assert parse_params({"model": " default ", "conf": "0.5", "iou": "1", "imgsz": "640"}, SETTINGS) == JobParams(
        model="shapes", conf=0.5, iou=1.0, imgsz=640
    ), "an alias becomes the registry name"
    assert parse_params({"model": "coco", "conf": "1e-40"}, SETTINGS).conf == 0.0, "under float32's smallest normal"
    assert FLOAT32_SMALLEST_NORMAL > 1e-40


@pytest.mark.parametrize(
    ("form", "code", "sentence"),
    [
        ({"conf": "nan"}, "invalid_parameter", "conf must be a number between 0.0 and 1.0."),
        ({"iou": "1.5"}, "invalid_parameter", "iou must be a number between 0.0 and 1.0."),
        ({"conf": "high"}, "invalid_parameter", "conf must be a number between 0.0 and 1.0."),
        ({"imgsz": "31"}, "invalid_parameter", "imgsz must be a whole number between 32 and 4096."),
        ({"imgsz": "６４０"}, "invalid_parameter", "imgsz must be a whole number between 32 and 4096."),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(form: dict[str, str], code: str, sentence: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_params(form, SETTINGS)
    assert (error.value.status, error.value.code, error.value.message) == (400, code, sentence)


def test_whole_numbers_are_ascii_digits_within_bounds() -> None:
    assert whole_number("0640", "imgsz", 32, 4096) == 640
    for raw in ("", "-1", "1e3", "00004096", "4097", "３２"):
        with pytest.raises(ApiError, match="imgsz must be a whole number"):
            whole_number(raw, "imgsz", 32, 4096)


def test_a_callback_url_is_an_absolute_http_url_without_credentials() -> None:
    assert parse_callback_url({}) is None and parse_callback_url({"callback_url": "  "}) is None
    assert parse_callback_url({"callback_url": " https://hooks.example/x?a=1 "}) == "https://hooks.example/x?a=1"
    bad = {
        "ftp://hooks.example/": "absolute http or https URL",
        "https:///path": "absolute http or https URL",
        "https://hooks.example:99999/": "absolute http or https URL",
        "https://hooks.example/a b": "printable ASCII without spaces",
        "https://user:secret@hooks.example/": "user name or password",
        "https://hooks.example/" + "a" * MAX_CALLBACK_URL_LENGTH: f"at most {MAX_CALLBACK_URL_LENGTH} characters",
    }
    for raw, sentence in bad.items():
        with pytest.raises(ApiError, match=sentence) as error:
            parse_callback_url({"callback_url": raw})
        assert (error.value.status, error.value.code) == (400, "invalid_parameter")


def test_filenames_are_for_display_only() -> None:
    assert clean_filename("../../etc/passwd", 0) == "passwd"
    assert clean_filename("C:\\photos\\cat.png", 0) == "cat.png"
    assert clean_filename("\x00\n", 4) == "image-5"
    assert len(clean_filename("a" * 400, 0)) == 255


def test_statuses_repeated_or_comma_separated_once_each() -> None:
    assert status_filter([]) == ()
    assert status_filter(["queued, running", "queued", " ,failed"]) == ("queued", "running", "failed")
    with pytest.raises(ApiError, match="Unknown status 'done'") as error:
        status_filter(["queued,done"])
    assert (error.value.status, error.value.code) == (400, "invalid_parameter")


def test_a_rerun_changes_only_the_parameters_its_form_sets() -> None:
    assert parse_param_changes({}) == {}
    assert parse_param_changes({"conf": " ", "iou": "0.5"}) == {"iou": 0.5}
    assert parse_param_changes({"model": "default", "imgsz": "320"}) == {"model": "shapes", "imgsz": 320}
    with pytest.raises(ApiError) as refused:
        parse_param_changes({"conf": "2"})
    assert (refused.value.status, refused.value.code) == (400, "invalid_parameter")


def test_file_ids_are_ids_in_order_and_bounded() -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    assert parse_file_ids([str(i) for i in ids] + [f" {ids[0]} "], 4) == [*ids, ids[0]]
    for values, code in ((["nope"], "invalid_parameter"), ([str(ids[0])] * 5, "too_many_files")):
        with pytest.raises(ApiError) as refused:
            parse_file_ids(values, 4)
        assert (refused.value.status, refused.value.code) == (400, code)


def read(body: bytes, limit: int = 1000, with_file_ids: bool = True) -> tuple[dict[str, str], list[str]]:
    return read_json_fields(io.BytesIO(body), len(body), limit, with_file_ids)


def test_a_json_body_comes_down_to_form_fields_and_file_ids() -> None:
    body = {"file_ids": ["a", "b"], "model": "default", "conf": 0.5, "imgsz": 640, "callback_url": None}
    assert read(json.dumps(body).encode()) == ({"model": "default", "conf": "0.5", "imgsz": "640"}, ["a", "b"])
    assert read(b'{"iou": 0.4}', with_file_ids=False) == ({"iou": "0.4"}, [])
    assert json_body_limit(10_000) > 10_000 * len(json.dumps(str(uuid.uuid4())) + ", ")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (b'{"file_ids": "a"}', 400, "invalid_parameter"),
        (b'{"file_ids": [1]}', 400, "invalid_parameter"),
        (b'{"file_ids": [], "conf": true}', 400, "invalid_parameter"),
        (b'{"file_ids": [], "model": 3}', 400, "invalid_parameter"),
        (b'{"file_ids": [], "image": "x"}', 400, "invalid_parameter"),
        (b'{"file_ids": ["' + b"a" * 2000 + b'"]}', 413, "too_large"),
    ],
)
def test_a_bad_json_body_is_refused(body: bytes, status: int, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        read(body)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_json_body_over_the_bound_is_refused_without_reading_past_it() -> None:
    stream = io.BytesIO(b"{" + b" " * 5000 + b"}")
    with pytest.raises(ApiError) as refused:
        read_json_fields(stream, None, 1000)  # no Content-Length: read up to the bound only
    assert refused.value.status == 413 and stream.tell() == 1001
    with pytest.raises(ApiError):
        read_json_fields(io.BytesIO(b"{}"), 5000, 1000)  # a Content-Length over the bound: nothing read
