"""Data: bundled real sets, loaders for real formats, simulators with known ground truth, batch samplers."""

from pairloss.data.ctr import CTRTable, load_ctr_log
from pairloss.data.ctr_sim import CTRLog, CTRSimulator, reference_lists
from pairloss.data.depth import DepthTask, simulate_depth_task
from pairloss.data.digits import OpenSetSplit, open_set_digits
from pairloss.data.driving import DrivingScenes, simulate_driving_scenes
from pairloss.data.glyphs import GlyphPools, glyph_pools, open_set_glyphs, render_glyphs
from pairloss.data.images import TexturePatches, texture_patches
from pairloss.data.instances import InstanceImage, load_instance_image
from pairloss.data.letor import LetorData, LetorQuery, iter_letor, load_letor
from pairloss.data.multilabel import (
    MultiLabelData,
    load_arff,
    load_svmlight_multilabel,
    make_multilabel,
    mulan_label_names,
)
from pairloss.data.organ import OrganMatchingData, simulate_organ_matching
from pairloss.data.samplers import MPerClassBatchSampler, MPerClassSampler

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
    "MPerClassBatchSampler",
    "MPerClassSampler",
    "MultiLabelData",
    "OpenSetSplit",
    "OrganMatchingData",
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
