from taco_app.cota.registry import ATTRIBUTION, action_names, action_specs

TACO_ORDER = [
    "OCR", "LocalizeObjects", "GetObjects", "EstimateRegionDepth", "EstimateObjectDepth", "Crop", "ZoomIn",
    "QueryLanguageModel", "GetImageToImagesSimilarity", "GetImageToTextsSimilarity", "GetTextToImagesSimilarity",
    "DetectFaces", "QueryKnowledgeBase", "Calculate", "SolveMathEquation", "Terminate",
]


def test_sixteen_actions_in_taco_order():
    assert action_names() == TACO_ORDER


def test_every_action_is_complete():
    for spec in action_specs():
        assert spec.description and spec.arguments and spec.returns and spec.examples, spec.name
        for example in spec.examples:
            assert example["name"] == spec.name
            assert set(example["arguments"]) <= set(spec.arguments) | {"zoom_factor"}


def test_attribution_names_source_and_licence():
    assert "SalesforceAIResearch/TACO" in ATTRIBUTION and "CC-BY-NC-4.0" in ATTRIBUTION


def test_specs_by_name():
    specs = {spec.name: spec for spec in action_specs()}
    assert specs["Calculate"].returns == {"result": "the result of the math expression."}
    assert "Nope" not in specs
