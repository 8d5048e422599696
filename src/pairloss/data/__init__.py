"""Data: bundled real sets, loaders for real formats, simulators with known ground truth, batch samplers.

The names below are imported on first use, so that ``import pairloss.data.samplers`` needs only torch; the
loaders and simulators need the ``data`` extra (scikit-learn, scipy, scikit-image, matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pairloss.data.ctr import CTRTable, load_ctr_log
    from pairloss.data.ctr_sim import CTRLog, CTRSimulator, ReferenceLists, RequestBatches, reference_lists
    from pairloss.data.depth import DepthTask, simulate_depth_task
    from pairloss.data.digits import OpenSetSplit, open_set_digits
    from pairloss.data.driving import DrivingScenes, simulate_driving_scenes
    from pairloss.data.glyphs import GlyphPools, glyph_pools, open_set_glyphs, render_glyphs
    from pairloss.data.images import TexturePatches, texture_patches
    from pairloss.data.instances import InstanceImage, load_instance_image
    from pairloss.data.letor import LetorData, LetorQuery, iter_letor, load_letor
    from pairloss.data.multilabel import (
        LinearMultiLabelProblem,
        MultiLabelData,
        load_arff,
        load_svmlight_multilabel,
        make_multilabel,
        mulan_label_names,
    )
    from pairloss.data.organ import OrganMatchingData, simulate_organ_matching
    from pairloss.data.samplers import MPerClassBatchSampler, MPerClassSampler

#: Public name -> the module that defines it.
_MODULES = {
    "CTRLog": "pairloss.data.ctr_sim",
    "CTRSimulator": "pairloss.data.ctr_sim",
    "CTRTable": "pairloss.data.ctr",
    "DepthTask": "pairloss.data.depth",
    "DrivingScenes": "pairloss.data.driving",
    "GlyphPools": "pairloss.data.glyphs",
    "InstanceImage": "pairloss.data.instances",
    "LetorData": "pairloss.data.letor",
    "LetorQuery": "pairloss.data.letor",
    "MPerClassBatchSampler": "pairloss.data.samplers",
    "MPerClassSampler": "pairloss.data.samplers",
    "LinearMultiLabelProblem": "pairloss.data.multilabel",
    "MultiLabelData": "pairloss.data.multilabel",
    "OpenSetSplit": "pairloss.data.digits",
    "OrganMatchingData": "pairloss.data.organ",
    "ReferenceLists": "pairloss.data.ctr_sim",
    "RequestBatches": "pairloss.data.ctr_sim",
    "TexturePatches": "pairloss.data.images",
    "glyph_pools": "pairloss.data.glyphs",
    "iter_letor": "pairloss.data.letor",
    "load_arff": "pairloss.data.multilabel",
    "load_ctr_log": "pairloss.data.ctr",
    "load_instance_image": "pairloss.data.instances",
    "load_letor": "pairloss.data.letor",
    "load_svmlight_multilabel": "pairloss.data.multilabel",
    "make_multilabel": "pairloss.data.multilabel",
    "mulan_label_names": "pairloss.data.multilabel",
    "open_set_digits": "pairloss.data.digits",
    "open_set_glyphs": "pairloss.data.glyphs",
    "reference_lists": "pairloss.data.ctr_sim",
    "render_glyphs": "pairloss.data.glyphs",
    "simulate_depth_task": "pairloss.data.depth",
    "simulate_driving_scenes": "pairloss.data.driving",
    "simulate_organ_matching": "pairloss.data.organ",
    "texture_patches": "pairloss.data.images",
}

__all__ = [
    "CTRLog",
    "CTRSimulator",
    "CTRTable",
    "DepthTask",
    "DrivingScenes",
    "GlyphPools",
    "InstanceImage",
    "LetorData",
    "LetorQuery",
    "LinearMultiLabelProblem",
    "MPerClassBatchSampler",
    "MPerClassSampler",
    "MultiLabelData",
    "OpenSetSplit",
    "OrganMatchingData",
    "ReferenceLists",
    "RequestBatches",
    "TexturePatches",
    "glyph_pools",
    "iter_letor",
    "load_arff",
    "load_ctr_log",
    "load_instance_image",
    "load_letor",
    "load_svmlight_multilabel",
    "make_multilabel",
    "mulan_label_names",
    "open_set_digits",
    "open_set_glyphs",
    "reference_lists",
    "render_glyphs",
    "simulate_depth_task",
    "simulate_driving_scenes",
    "simulate_organ_matching",
    "texture_patches",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
