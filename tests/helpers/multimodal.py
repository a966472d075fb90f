"""Small random multimodal and task models (transformers, torchvision), built without downloads,
and wrappers that feed them the text so that Grad-CAM sees a model of the image alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

IMAGE = 32  # input side of the vision towers below (4 x 4 patches of 8 px)
PATCH = 8
TEXT = 7  # tokens of the fixed prompt / caption / question
VOCAB = 64


def _ids(batch: int = 1, length: int = TEXT, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    ids[:, 0] = 1
    return ids


def _vision(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        **extra,
    }


def _text(**extra: Any) -> dict[str, Any]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        **extra,
    }


class Scores(nn.Module):
    """``model(pixel_values=x, **text).<field>``: the image is the only input Grad-CAM feeds."""

    def __init__(self, model: nn.Module, field: str, **text: Tensor) -> None:
        super().__init__()
        self.model, self.field, self.text = model, field, text

    def forward(self, pixel_values: Tensor) -> Tensor:
        return getattr(self.model(pixel_values=pixel_values, **self.text), self.field)


def clip(prompts: int = 5) -> nn.Module:
    """pytorch-grad-cam's CLIP tutorial: image-text scores (B, prompts) of a fixed prompt list."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config=_text(), vision_config=_vision(), projection_dim=16)
    ids = _ids(prompts)
    return Scores(CLIPModel(config).eval(), "logits_per_image", input_ids=ids).eval()


def blip(task: str) -> nn.Module:
    """BLIP for captioning (teacher-forced caption logits), VQA (answer logits for a question)
    or image-text matching (the ITM head's logits)."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.BlipConfig(
        text_config=_text(bos_token_id=1, sep_token_id=2, pad_token_id=0),
        vision_config=_vision(),
        projection_dim=16,
    )
    ids = _ids()
    if task == "caption":
        model = tf.BlipForConditionalGeneration(config).eval()
        return Scores(model, "logits", input_ids=ids).eval()
    if task == "vqa":
        return BlipAnswer(tf.BlipForQuestionAnswering(config).eval(), ids, _ids(seed=1)).eval()
    model = tf.BlipForImageTextRetrieval(config).eval()
    return Scores(model, "itm_score", input_ids=ids).eval()


class BlipAnswer(nn.Module):
    """BLIP VQA's answer logits (B, T, V) for a fixed question and answer (teacher forcing), as
    its ``generate`` computes them (its ``forward`` returns the loss only)."""

    def __init__(self, model: nn.Module, question: Tensor, answer: Tensor) -> None:
        super().__init__()
        self.model, self.question, self.answer = model, question, answer

    def forward(self, pixel_values: Tensor) -> Tensor:
        image = self.model.vision_model(pixel_values=pixel_values).last_hidden_state
        question = self.model.text_encoder(
            input_ids=self.question.expand(len(image), -1), encoder_hidden_states=image
        ).last_hidden_state
        answer = self.answer.expand(len(image), -1)
        return self.model.text_decoder(input_ids=answer, encoder_hidden_states=question).logits


def vision_encoder_decoder() -> nn.Module:
    """A ViT encoder and a BERT decoder with cross-attention: caption logits (B, T, V)."""
    import transformers as tf

    torch.manual_seed(0)
    encoder = tf.ViTConfig(**_vision())
    decoder = tf.BertConfig(**_text(is_decoder=True, add_cross_attention=True))
    config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    model = tf.VisionEncoderDecoderModel(config).eval()
    return Scores(model, "logits", decoder_input_ids=_ids()).eval()


def vilt() -> nn.Module:
    """ViLT for VQA: image patches and question tokens in one sequence; answer logits."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.ViltConfig(
        **_text(max_position_embeddings=TEXT),
        image_size=IMAGE,
        patch_size=PATCH,
        max_image_length=-1,
        num_labels=5,
    )
    return Scores(tf.ViltForQuestionAnswering(config).eval(), "logits", input_ids=_ids()).eval()


def llava() -> nn.Module:
    """A LLaVA-style model: a CLIP vision tower whose second-last layer's patch tokens, projected,
    replace the image tokens of a small Llama's input; next-token logits (B, T, V)."""
    import transformers as tf

    torch.manual_seed(0)
    image_token = VOCAB - 1
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**_vision()),
        text_config=tf.LlamaConfig(**_text(num_key_value_heads=2)),
        image_token_id=image_token,
        image_seq_length=(IMAGE // PATCH) ** 2,
        projector_hidden_act="gelu",
    )
    ids = torch.cat(
        [_ids(length=2), torch.full((1, (IMAGE // PATCH) ** 2), image_token), _ids(length=3)], 1
    )
    return Scores(tf.LlavaForConditionalGeneration(config).eval(), "logits", input_ids=ids).eval()


def owlvit() -> nn.Module:
    """OWL-ViT: per-patch boxes and class logits against text queries; the class logits."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.OwlViTConfig(text_config=_text(), vision_config=_vision(), projection_dim=32)
    model = tf.OwlViTForObjectDetection(config).eval()
    return Scores(model, "logits", input_ids=_ids(2)).eval()


def detr(deformable: bool = False) -> nn.Module:
    """DETR (or Deformable DETR) with a random timm ResNet-18 backbone and 2+2 transformer
    layers: the query class logits (B, Q, classes + 1)."""
    import transformers as tf

    torch.manual_seed(0)
    common: dict[str, Any] = {
        "use_timm_backbone": True,
        "backbone": "resnet18",
        "use_pretrained_backbone": False,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "num_queries": 10,
        "num_labels": 3,
    }
    if deformable:
        config = tf.DeformableDetrConfig(
            **common, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2
        )
        return Scores(tf.DeformableDetrForObjectDetection(config).eval(), "logits").eval()
    config = tf.DetrConfig(**common)
    return Scores(tf.DetrForObjectDetection(config).eval(), "logits").eval()
