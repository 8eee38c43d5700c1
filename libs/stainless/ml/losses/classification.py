"""Cross-entropy losses: domain, cell class, segmentation and structure (ch. 5.2, 6.1, 8.2).

Pure functions returning ``(loss, logs)``; labels are integer class indices. Labels out
of range raise ValueError (checked on the host, a small sync on GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from stainless.ml.losses._checks import check_tensor, shape

Logs = dict[str, float]


def _check_labels(name: str, labels: Tensor, classes: int, ignore_index: int | None) -> None:
    check_tensor(name, labels, floating=False)
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got {labels.dtype}")
    valid = labels if ignore_index is None else labels[labels != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        allowed = f"[0, {classes})" + ("" if ignore_index is None else f" or {ignore_index}")
        raise ValueError(
            f"{name} must lie in {allowed}, got values in [{int(valid.min())}, {int(valid.max())}]"
        )


def _check_logits_2d(
    logits: Tensor, labels: Tensor, labels_name: str, ignore_index: int | None = None
) -> None:
    check_tensor("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, classes], got {shape(logits)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"{labels_name} must be [B] = [{logits.shape[0]}], got {shape(labels)}")
    _check_labels(labels_name, labels, logits.shape[1], ignore_index)


def _accuracy(logits: Tensor, labels: Tensor, ignore_index: int | None = None) -> float:
    with torch.no_grad():
        keep = torch.ones_like(labels, dtype=torch.bool)
        if ignore_index is not None:
            keep = labels != ignore_index
        if not bool(keep.any()):
            return float("nan")
        correct = (logits.argmax(dim=1) == labels) & keep
        return float(correct.sum()) / float(keep.sum())


def domain_classification_loss(logits: Tensor, domain_index: Tensor | int) -> tuple[Tensor, Logs]:
    """Domain classification CE of the discriminator's domain head (thesis Eq. 5.2, 5.4).

    Args:
        logits: domain logits ``[B, domains]``.
        domain_index: the true (Eq. 5.4) or target (Eq. 5.2) domain, ``[B]`` integers or
            one int for the whole batch.

    Returns:
        The loss and logs ``domain`` and ``domain_accuracy``.
    """
    check_tensor("logits", logits)
    if isinstance(domain_index, int) and not isinstance(domain_index, bool):
        if logits.dim() != 2:
            raise ValueError(f"logits must be [B, domains], got {shape(logits)}")
        domain_index = torch.full(
            (logits.shape[0],), domain_index, dtype=torch.long, device=logits.device
        )
    if not isinstance(domain_index, Tensor):
        raise ValueError(f"domain_index must be an int or a tensor, got {domain_index!r}")
    _check_logits_2d(logits, domain_index, "domain_index")
    loss = F.cross_entropy(logits, domain_index.long())
    return loss, {
        "domain": float(loss.detach()),
        "domain_accuracy": _accuracy(logits, domain_index),
    }


def paired_targets(partner_labels: Tensor, partner_logits: Tensor, *, ignore_index: int) -> Tensor:
    """Class targets of unlabelled cells from their registered partners (label transfer
    through the pairing).

    A cell takes its partner's label or, where the partner has none (``ignore_index``), the
    class probabilities the classifier gives the partner: a soft target, near-uniform while
    the classifier knows little, sharp once it is sure.

    Args:
        partner_labels: the labels of the cells' registered partners ``[P]``.
        partner_logits: the classifier's logits of the partners ``[P, classes]`` (not
            differentiated through).
        ignore_index: the label of an unlabelled partner.

    Returns:
        ``[P, classes]`` target probabilities.
    """
    _check_logits_2d(partner_logits, partner_labels, "partner_labels", ignore_index)
    with torch.no_grad():
        targets = torch.softmax(partner_logits.detach().float(), dim=1)
        known = partner_labels != ignore_index
        classes = partner_logits.shape[1]
        targets[known] = F.one_hot(partner_labels[known].long(), classes).to(targets.dtype)
        return targets


def soft_classification_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Logs]:
    """Cell classification CE against target probabilities (``paired_targets``).

    Args:
        logits: class logits ``[B, classes]``.
        targets: class probabilities ``[B, classes]`` (rows sum to 1).

    Returns:
        The mean CE and logs ``classification`` and ``agreement`` (the share of rows whose
        most probable class is the target's).
    """
    check_tensor("logits", logits)
    check_tensor("targets", targets)
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(
            f"logits and targets must be the same [B, classes], got {shape(logits)} and "
            f"{shape(targets)}"
        )
    loss = F.cross_entropy(logits, targets.to(logits.dtype))
    with torch.no_grad():
        agreement = int((logits.argmax(dim=1) == targets.argmax(dim=1)).sum()) / len(logits)
    return loss, {"classification": float(loss.detach()), "agreement": agreement}


def classification_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    class_weights: Tensor | None = None,
    ignore_index: int | None = None,
) -> tuple[Tensor, Logs]:
    """Cell classification CE (domain-agnostic classifier Eq. 5.5; AC-GAN head ch. 8.2).

    Args:
        logits: class logits ``[B, classes]``.
        labels: class indices ``[B]``.
        class_weights: optional per-class weights ``[classes]`` (weighted mean, as
            ``torch.nn.functional.cross_entropy``), for imbalanced classes.
        ignore_index: label of unlabelled samples (a domain without labels, thesis
            ch. 5.2); they do not count. None: every sample must be labelled.

    Returns:
        The mean CE over the labelled samples (0, in the graph, when there are none) and
        logs ``classification`` and ``accuracy`` (NaN without labelled samples).
    """
    _check_logits_2d(logits, labels, "labels", ignore_index)
    if class_weights is not None:
        check_tensor("class_weights", class_weights)
        if class_weights.shape != (logits.shape[1],):
            raise ValueError(
                f"class_weights must be [classes] = [{logits.shape[1]}], got {shape(class_weights)}"
            )
        if bool((class_weights < 0).any()):
            raise ValueError("class_weights must be non-negative")
        class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
    labels = labels.long()
    if ignore_index is not None and not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0, {"classification": 0.0, "accuracy": float("nan")}
    ignored = -100 if ignore_index is None else ignore_index  # -100: cross_entropy's default
    loss = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignored)
    return loss, {
        "classification": float(loss.detach()),
        "accuracy": _accuracy(logits, labels, ignore_index),
    }


def _pixel_ce(
    logits: Tensor, mask: Tensor, ignore_index: int, mask_name: str
) -> tuple[Tensor, float]:
    check_tensor("logits", logits)
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, classes, H, W], got {shape(logits)}")
    b, _, h, w = logits.shape
    if mask.shape != (b, h, w):
        raise ValueError(f"{mask_name} must be [B, H, W] = {(b, h, w)}, got {shape(mask)}")
    _check_labels(mask_name, mask, logits.shape[1], ignore_index)
    mask = mask.long()
    if not bool((mask != ignore_index).any()):
        return logits.sum() * 0.0, float("nan")  # nothing to learn from; keeps the graph
    loss = F.cross_entropy(logits, mask, ignore_index=ignore_index)
    return loss, _accuracy(logits, mask, ignore_index)


def segmentation_loss(
    logits: Tensor, mask: Tensor, *, ignore_index: int = -1
) -> tuple[Tensor, Logs]:
    """Pixel-wise CE of the segmentation head on the latent (thesis Eq. 5.7).

    Args:
        logits: ``[B, 4, H, W]`` (background, red cell, cytoplasm, nucleus; any number of
            classes is accepted).
        mask: class indices ``[B, H, W]``; ``ignore_index`` pixels do not count.
        ignore_index: label of unannotated pixels (weak annotations).

    Returns:
        The mean CE over the annotated pixels (0, in the graph, when there are none) and
        logs ``segmentation`` and ``pixel_accuracy``.
    """
    loss, accuracy = _pixel_ce(logits, mask, ignore_index, "mask")
    return loss, {"segmentation": float(loss.detach()), "pixel_accuracy": accuracy}


def structure_loss(
    segmenter_logits_on_generated: Tensor,
    structure_target_mask: Tensor,
    *,
    classes: Sequence[int] | None = None,
    ignore_index: int = -1,
) -> tuple[Tensor, Logs]:
    """Structure reconstruction CE through the frozen segmentation network (Eq. 6.3).

    The caller runs the frozen segmenter (weights not updated, gradients flowing to the
    generator) on the generated image and passes its logits; the target is the pseudo
    segmentation mask of the registered stained image.

    Args:
        segmenter_logits_on_generated: ``[B, 4, H, W]`` segmenter logits on G(x, s̃, t).
        structure_target_mask: ``[B, H, W]`` class indices, Seg(x_match).
        classes: when given, only pixels whose target is one of these classes count
            (``CE_{i ∈ b, r}`` of Eq. 6.3 for the output with a generated structure code:
            ``classes=(0, 1)``); default all classes.
        ignore_index: label of pixels without a target.

    Returns:
        The loss and logs ``structure`` and ``structure_pixel_accuracy``.
    """
    mask = structure_target_mask
    check_tensor("structure_target_mask", mask, floating=False)
    if classes is not None:
        n = segmenter_logits_on_generated.shape[1] if segmenter_logits_on_generated.dim() else 0
        if len(classes) == 0 or any(not 0 <= c < n for c in classes):
            raise ValueError(f"classes must be a non-empty subset of 0..{n - 1}, got {classes}")
        keep = torch.isin(mask, torch.tensor(list(classes), device=mask.device))
        mask = torch.where(keep, mask, torch.full_like(mask, ignore_index))
    loss, accuracy = _pixel_ce(
        segmenter_logits_on_generated, mask, ignore_index, "structure_target_mask"
    )
    return loss, {"structure": float(loss.detach()), "structure_pixel_accuracy": accuracy}
