"""What a run embeds and writes, decided from the built models' manifests before anything starts."""

from __future__ import annotations

import pytest

from embedstream.onnx_models.registry import ModelNotBuiltError
from embedstream.pipelines.plan import FUSED_SPACE, plan_ingest
from embedstream.schemas.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("modalities", "groups", "spaces"),
    [
        (None, ("text", "image", "audio", "video"), ["minilm", "effnet", "voice", FUSED_SPACE, "bm25"]),
        (["text"], ("text",), ["minilm", "bm25"]),  # text points also get the sparse keyword vector
        (["text", "image"], ("text", "image"), ["minilm", "effnet", "bm25"]),
        (["video"], ("video",), ["minilm", "effnet", "voice", FUSED_SPACE]),
    ],
)
def test_modalities_decide_groups_and_spaces(media_models, modalities, groups, spaces):
    plan = plan_ingest(Settings.load(model={"cache_dir": str(media_models)}, media={"modalities": modalities}))
    assert plan.groups == groups and [s.name for s in plan.spaces] == spaces
    assert (plan.fusion is not None) == ("video" in groups)


def test_auto_leaves_off_what_is_not_built_and_an_explicit_list_refuses(media_models):
    missing = {"cache_dir": str(media_models), "audio_model": "no-such-model"}
    auto = plan_ingest(Settings.load(model=missing))
    assert auto.groups == ("text", "image") and "voice" not in [s.name for s in auto.spaces]
    with pytest.raises(ModelNotBuiltError):
        plan_ingest(Settings.load(model=missing, media={"modalities": ["video"]}))
