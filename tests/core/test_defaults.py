"""Every default has one home, the schema: the option classes read it, the shipped config and the docs do not
restate it."""

import dataclasses
import re

import pytest
import yaml
from helpers import REPO
from unet_pipeline.core.defaults import defaults_from_schema, options_table, schema_defaults, section_schema
from unet_pipeline.data.transfer import DownloadOptions
from unet_pipeline.models.unet import UNetConfig
from unet_pipeline.segmentation.fragments import FragmentOptions
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.stages.predict import PredictionOptions
from unet_pipeline.training.options import TrainingOptions

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
# class, schema section, keys of the section that the workflow handles rather than the class
OPTION_CLASSES = [
    (DownloadOptions, "download", set()),
    (PredictionOptions, "prediction", {"shards", "submission_tiff"}),
    (TrainingOptions, "$defs/preset/training", set()),
    (UNetConfig, "$defs/preset/model", set()),
    (SegmentationOptions, "segmentation", set()),
    (FragmentOptions, "segmentation/fragments", set()),
]


@pytest.mark.parametrize(("cls", "section", "outside"), OPTION_CLASSES, ids=lambda v: getattr(v, "__name__", None))
def test_option_classes_take_their_defaults_from_the_schema(cls, section, outside):
    defaults = schema_defaults(section)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    assert set(defaults) - outside <= set(fields), f"{cls.__name__} lacks options of {section}"
    built = cls()
    for key in set(defaults) - outside:
        value, expected = getattr(built, key), defaults[key]
        if dataclasses.is_dataclass(value):  # an object of the schema: its own class, with its own defaults
            value, expected = dataclasses.asdict(value), schema_defaults(f"{section}/{key}") | expected
        assert value == (tuple(expected) if isinstance(expected, list) else expected), f"{cls.__name__}.{key}"


def test_prediction_chooses_test_time_augmentation_by_default_as_the_workflow_does():
    assert PredictionOptions().tta == "auto"
    assert section_schema("prediction")["properties"]["tta"]["default"] == "auto"


def test_a_class_that_writes_its_own_default_is_refused():
    with pytest.raises(TypeError, match=r"Own.batch_size: its default lives in config.schema.yaml \(prediction\)"):

        @dataclasses.dataclass
        @defaults_from_schema("prediction")
        class Own:
            batch_size: int = 8


def leaves(config: dict, prefix=()):
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def schema_default(path: tuple):
    """The schema's default of a config key path (presets.NAME.* maps onto the preset definition); KeyError
    for a key without one."""
    *parents, key = path
    section = "/".join(["$defs", "preset", *parents[2:]] if parents[:1] == ["presets"] else parents)
    properties = section_schema(section)["properties"] if section else SCHEMA["properties"]
    return properties.get(key, {}).get("default", KeyError)


def test_the_shipped_config_states_only_what_differs_from_the_defaults():
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    shipped.pop("datasets")  # facts about the data (ISBI's label values, voxel size), not pipeline defaults
    restated = [".".join(path) for path, value in leaves(shipped) if schema_default(path) == value]
    assert not restated, f"config/config.yaml restates the schema's defaults of {restated}"


def test_the_check_of_the_shipped_config_finds_a_restated_default():
    assert schema_default(("presets", "paper", "training", "momentum")) == 0.99
    assert schema_default(("presets", "paper", "model", "levels")) == 5
    assert schema_default(("prediction", "tta")) == "auto"
    assert schema_default(("presets", "paper", "input_size")) is KeyError


def test_config_readme_shows_every_option_of_the_schema():
    text = (REPO / "config" / "README.md").read_text()
    table = re.search(r"<!-- options table: begin -->\n(.*)<!-- options table: end -->", text, re.DOTALL)
    assert table, "config/README.md has no options table"
    assert table.group(1) == options_table(), "regenerate it: python -m unet_pipeline.core.defaults"


def test_every_schema_description_is_one_string():
    """An unquoted comma in a YAML flow mapping ends a description there and adds a key without value."""
    cut = []

    def walk(node, where):
        if isinstance(node, dict):
            cut.extend(f"{where}.{key}" for key, value in node.items() if value is None and key != "default")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(SCHEMA, "schema")
    assert not cut, cut
