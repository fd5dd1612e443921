import pytest
from unet_pipeline.errors import PipelineError
from unet_pipeline.sources import parse_sections, resolve_source


def test_remote_source_resolved_against_base_url():
    source = resolve_source({"base": "https://example.org/data/", "image": {"source": "train-volume.tif"}}, "image")
    assert source.remote and source.location == "https://example.org/data/train-volume.tif"
    assert source.filename == "train-volume.tif"


def test_local_sources_are_used_in_place(tmp_path):
    dataset = {
        "base": str(tmp_path),
        "image": {"source": "a.tif"},
        "labels": {"source": "file:///data/my%20labels.tif"},
    }
    assert resolve_source(dataset, "image").location == str(tmp_path / "a.tif")
    labels = resolve_source(dataset, "labels")
    assert not labels.remote and labels.location == "/data/my labels.tif"
    assert resolve_source({"image": {"source": "/abs/x.zarr"}}, "labels") is None


def test_unsupported_scheme_is_an_error():
    with pytest.raises(PipelineError, match="ftp"):
        resolve_source({"image": {"source": "ftp://host/x.tif"}}, "image")


@pytest.mark.parametrize(
    "spec, expected",
    [("0-3", [0, 1, 2, 3]), ("0-1, 4,6-7", [0, 1, 4, 6, 7]), ("all", list(range(8))), ([5, 2, 2], [2, 5]), (None, [])],
)
def test_parse_sections(spec, expected):
    assert parse_sections(spec, 8) == expected


@pytest.mark.parametrize("spec, message", [("0-8", "outside"), ("3-1", "backwards"), ("a-b", "cannot parse")])
def test_parse_sections_errors(spec, message):
    with pytest.raises(PipelineError, match=message):
        parse_sections(spec, 8)
