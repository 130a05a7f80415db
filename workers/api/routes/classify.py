"""Classify a new text (read scope): zero-shot by label descriptions, by labelled points near it, or both
(``workers.classify``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from embedstream.workers.api.deps import SearcherDep, requires
from embedstream.workers.api.errors import blocking
from embedstream.workers.api.models import ClassifyOut, ClassifyRequest
from embedstream.workers.classify import classify_text

router = APIRouter(tags=["classify"], dependencies=[Depends(requires("read"))])


@router.post("/classify", response_model=ClassifyOut)
async def classify(body: ClassifyRequest, searcher: SearcherDep) -> ClassifyOut:
    """The text's label, with its score and how far ahead of the second label it is (``none`` under the
    margin)."""
    labels, examples = body.labels, body.examples
    space, method, prediction = await blocking(
        lambda: classify_text(searcher, body.text, body.space, labels, examples, body.k, body.margin)
    )
    return ClassifyOut(
        space=space, method=method, label=prediction.label, score=prediction.score, margin=prediction.margin
    )
