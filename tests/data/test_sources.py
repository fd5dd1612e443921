import pytest
from helpers import run_snakemake, tiny_config, write_config
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.data.sources import check_outside, check_results, parse_sections, resolve_source


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


@pytest.mark.parametrize("name", ["%24%28touch%20pwned%29.tif", "a%20b.tif", "x%3By.tif", "%60id%60.tif"])
def test_a_url_whose_file_name_could_reach_a_shell_is_refused(name):
    source = resolve_source({"image": {"source": f"http://host/data/{name}"}}, "image")
    with pytest.raises(PipelineError, match=r"http://host/data/.* ends in the file name .*letters, digits"):
        _ = source.filename


def test_safe_file_names_pass():
    source = resolve_source({"image": {"source": "http://host/d/train-volume_v2.1.tif"}}, "image")
    assert source.filename == "train-volume_v2.1.tif"


def test_a_local_source_inside_the_results_folder_is_refused(tmp_path):
    inside = resolve_source({"image": {"source": str(tmp_path / "results" / "a" / "volume.zarr")}}, "image")
    with pytest.raises(PipelineError, match=r"dataset 'a', image: the source .*volume\.zarr lies inside the results"):
        check_outside(inside, str(tmp_path / "results"), "dataset 'a', image")
    outside = resolve_source({"image": {"source": str(tmp_path / "data" / "image.tif")}}, "image")
    check_outside(outside, str(tmp_path / "results"), "dataset 'a', image")
    check_outside(resolve_source({"image": {"source": "http://h/results/x.tif"}}, "image"), "results", "remote")


def test_a_results_folder_that_would_write_where_it_must_not_is_refused(tmp_path):
    (tmp_path / "sections").mkdir()
    datasets = {"a": {"image": {"source": str(tmp_path / "sections")}}, "b": {"base": (tmp_path / "b").as_uri()}}
    for results, message in [
        ("", r"results: is empty"),
        ("/", r"results: / is the file system's root"),
        (str(tmp_path / "sections" / "out"), r"lies inside .*sections, a source folder of dataset 'a'"),
        (str(tmp_path / "b"), r"results: .*b lies inside .*b, a source folder of dataset 'b'"),
    ]:
        with pytest.raises(PipelineError, match=message):
            check_results(results, datasets)
    check_results(str(tmp_path / "results"), datasets)


@pytest.mark.workflow
def test_the_workflow_refuses_such_sources_and_file_names(tmp_path, tiny_isbi):
    config = tiny_config(tiny_isbi.as_uri())
    config["datasets"]["tiny"]["image"]["source"] = str(tmp_path / "results" / "tiny" / "volume.zarr")
    write_config(tmp_path / "inside.yaml", config)
    result = run_snakemake(tmp_path, "-n", "--configfile", "inside.yaml", check=False)
    assert result.returncode != 0 and "lies inside the results folder" in result.stdout + result.stderr
    config = tiny_config("http://127.0.0.1:9")
    config["datasets"]["tiny"]["image"]["source"] = "%24%28touch%20pwned%29.tif"
    write_config(tmp_path / "shell.yaml", config)
    result = run_snakemake(tmp_path, "-n", "--configfile", "shell.yaml", check=False)
    assert result.returncode != 0 and "holds characters other than letters" in result.stdout + result.stderr
    assert not (tmp_path / "pwned").exists()
    for results in ("", "/", str(tiny_isbi / "results")):
        write_config(tmp_path / "results.yaml", tiny_config(str(tiny_isbi), results))
        result = run_snakemake(tmp_path, "-n", "--configfile", "results.yaml", check=False)
        assert result.returncode != 0 and "results: " in result.stdout + result.stderr, results


def test_credentials_and_tokens_are_not_recorded():
    url = "https://user:secret@data.example.org:8443/em/train-volume.tif?X-Amz-Signature=abc&token=t#frag"
    source = resolve_source({"image": {"source": url}}, "image")
    assert source.public == "https://data.example.org:8443/em/train-volume.tif"
    assert source.location == url, "the download itself still uses them"
    assert resolve_source({"image": {"source": "/data/a.tif"}}, "image").public == "/data/a.tif"
