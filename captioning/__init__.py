"""Image captioning: a torchvision CNN in front of the shared decoder, image-caption data and feature caching."""

# the public names (docs/design.md); the command lines (captioning.backbone, captioning.caption) are left out,
# so that `python -m` runs each once
from captioning.backbones import BACKBONES, Backbone, BackboneSpec, build_backbone, fine_tune
from captioning.captioner import Captioner, ImageConfig, caption_forward
from captioning.cider import cider_d
from captioning.data import (
    ImageCaptions,
    hash_split,
    read_captions_tsv,
    read_coco_json,
    read_corpus,
    read_karpathy_json,
    split_by_path,
)
from captioning.encoder import CNNEncoder
from captioning.evaluation import caption_scores, nearest_neighbour
from captioning.features import FeatureCache, extract_features
from captioning.images import image_transform, load_image
from captioning.lite0 import EfficientNetLite0
from captioning.tuxpaint import tuxpaint

__all__ = [
    "Captioner",
    "ImageConfig",
    "caption_forward",
    "cider_d",
    "read_corpus",
    "caption_scores",
    "nearest_neighbour",
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "build_backbone",
    "fine_tune",
    "ImageCaptions",
    "hash_split",
    "read_captions_tsv",
    "read_coco_json",
    "read_karpathy_json",
    "split_by_path",
    "CNNEncoder",
    "FeatureCache",
    "extract_features",
    "image_transform",
    "load_image",
    "EfficientNetLite0",
    "tuxpaint",
]
