import math

import numpy as np
import pytest
import torch

from econsg.edit import apply_edit, select_gaussians
from econsg.errors import EconsgError
from econsg.evaluation import subset_scores
from econsg.metrics import confusion_matrix
from econsg.query import check_query_texts, relevancy, segment_texts
from econsg.scene.data import IGNORE
from econsg.semantic import distilled_pixels, make_semantic_loss, segment_latent, semantic_ce_loss, semantic_distill_loss


def unit(rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=-1, keepdim=True)


LATENTS = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])  # wall, sofa, lamp


def test_distill_loss_skips_ignored_pixels_and_l2_option():
    rendered = torch.zeros(2, 2, 3)
    target = torch.ones(2, 2, 3)
    target[0, 0] = 10.0
    valid = torch.tensor([[False, True], [True, True]])
    assert semantic_distill_loss(rendered, target, "l1", valid).item() == pytest.approx(1.0)
    assert semantic_distill_loss(rendered, target, "l1").item() == pytest.approx((10 + 3) / 4)
    assert semantic_distill_loss(rendered, target, "l2", valid).item() == pytest.approx(1.0)


def test_ce_loss_ignores_ignore_labels_and_normalises_by_log_c():
    rendered = LATENTS[[0, 1]].reshape(1, 2, 3)
    labels = torch.tensor([[0, -1]])
    loss = semantic_ce_loss(rendered, labels, LATENTS, 0.1, normalize=False)
    logits = LATENTS[0] @ LATENTS.T / 0.1
    expected = -torch.log_softmax(logits, 0)[0]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    normalised = semantic_ce_loss(rendered, labels, LATENTS, 0.1, normalize=True)
    assert normalised.item() == pytest.approx(expected.item() / math.log(3), rel=1e-5)
    assert semantic_ce_loss(rendered, torch.full((1, 2), -1), LATENTS, 0.1, True).item() == 0.0


def test_pixel_weights_make_both_terms_weighted_means():
    rendered = torch.zeros(2, 2, 3)
    target = torch.ones(2, 2, 3)
    target[0, 0] = 10.0
    weights = torch.tensor([[0.5, 1.0], [0.0, 0.25]])
    assert semantic_distill_loss(rendered, target, "l1", None, weights).item() == pytest.approx((0.5 * 10 + 1 + 0.25) / 1.75)
    valid = torch.tensor([[False, True], [True, True]])
    assert semantic_distill_loss(rendered, target, "l1", valid, weights).item() == pytest.approx(1.0)
    assert semantic_distill_loss(rendered, target, "l1", None, torch.ones(2, 2)).item() == pytest.approx((10 + 3) / 4)
    assert semantic_distill_loss(rendered, target, "l1", None, torch.zeros(2, 2)).item() == 0.0

    # CE: pixel 0 right (label 0 on the wall latent), pixel 1 wrong (label 2 on the sofa latent)
    features = LATENTS[[0, 1]].reshape(1, 2, 3).clone().requires_grad_(True)
    labels = torch.tensor([[0, 2]])
    per_pixel = [semantic_ce_loss(features[:, [i]], labels[:, [i]], LATENTS, 0.1, normalize=False).item() for i in range(2)]
    weighted = semantic_ce_loss(features, labels, LATENTS, 0.1, normalize=False, weights=torch.tensor([[1.0, 0.0]]))
    assert weighted.item() == pytest.approx(per_pixel[0], rel=1e-5)
    weighted.backward()
    assert features.grad[0, 1].abs().max() == 0, "a pixel of weight 0 teaches nothing"
    even = semantic_ce_loss(features, labels, LATENTS, 0.1, normalize=False, weights=torch.tensor([[0.3, 0.3]]))
    assert even.item() == pytest.approx(sum(per_pixel) / 2, rel=1e-5)


def test_semantic_hook_combines_terms_with_weights():
    class Out:
        features = LATENTS[[0, 1]].reshape(1, 1, 2, 3)

    maps = torch.zeros(1, 1, 2, 3)
    labels = torch.tensor([[[0, 1]]])
    hook = make_semantic_loss(maps, labels, LATENTS, lambda_sem=2.0, lambda_2d=0.0, dist="l1", temperature=0.1, ce_normalize=True)
    total, logged = hook(Out(), 0, None)
    assert total.item() == pytest.approx(2.0 * logged["sem"]) and "ce" not in logged
    hook_ce = make_semantic_loss(maps, labels, LATENTS, lambda_sem=2.0, lambda_2d=0.5, dist="l1", temperature=0.1, ce_normalize=True)
    total_ce, logged_ce = hook_ce(Out(), 0, None)
    assert logged_ce["ce"] > 0
    assert total_ce.item() == pytest.approx(2.0 * logged_ce["sem"] + 0.5 * logged_ce["ce"], rel=1e-5)


def test_semantic_hook_refuses_targets_and_renders_that_disagree():
    """Labels stored [V,W,H] trained on scrambled pixels; a latent width or render size off ended in a bare torch
    error; Gaussians without features in a TypeError."""
    maps, labels = torch.zeros(2, 3, 4, 3), torch.zeros(2, 3, 4, dtype=torch.long)
    kwargs = dict(lambda_sem=1.0, lambda_2d=0.5, dist="l1", temperature=0.1, ce_normalize=True)
    with pytest.raises(EconsgError, match=r"labels: got shape \[2, 4, 3\], expected the latent maps' \[V, H, W\] = \[2, 3, 4\]"):
        make_semantic_loss(maps, labels.transpose(1, 2), LATENTS, **kwargs)
    with pytest.raises(EconsgError, match=r"pixel_weights: got shape \[2, 3\]"):
        make_semantic_loss(maps, labels, LATENTS, pixel_weights=torch.ones(2, 3), **kwargs)
    for bad in (float("nan"), -1e6):  # a view's weighted mean fell back to 0: its loss gone, unreported
        weights = torch.ones(2, 3, 4)
        weights[0, 1, 2] = bad
        with pytest.raises(EconsgError, match=r"pixel_weights: expected finite weights >= 0"):
            make_semantic_loss(maps, labels, LATENTS, pixel_weights=weights, **kwargs)
    with pytest.raises(EconsgError, match=r"text_latents: got shape \[3, 3\], expected \[C, d\] with the latent maps' d = 5"):
        make_semantic_loss(torch.zeros(2, 3, 4, 5), labels, LATENTS, **kwargs)
    with pytest.raises(EconsgError, match=r"latent_maps: got shape \[3, 4, 3\], expected \[V, H, W, d\]"):
        make_semantic_loss(maps[0], labels, LATENTS, **kwargs)

    hook = make_semantic_loss(maps, labels, LATENTS, **kwargs)

    class Out:
        features = torch.zeros(1, 3, 4, 3)

    assert torch.isfinite(hook(Out(), 1, None)[0])
    Out.features = torch.zeros(1, 6, 8, 3)  # half the latent maps' resolution rendered at full
    with pytest.raises(EconsgError, match=r"rendered features \[H, W, d\] = \[6, 8, 3\], expected the latent maps' \[3, 4, 3\]"):
        hook(Out(), 1, None)
    Out.features = None
    with pytest.raises(EconsgError, match="the render carries no features"):
        hook(Out(), 1, None)


def test_semantic_hook_distils_only_the_pixels_of_its_mask():
    class Out:
        features = torch.zeros(1, 1, 2, 3)

    maps = torch.ones(1, 1, 2, 3)
    maps[0, 0, 1] = 5.0  # the second pixel's 2D latent is far from the render
    kwargs = dict(lambda_sem=1.0, lambda_2d=0.0, dist="l1", temperature=0.1, ce_normalize=True)
    labels = torch.tensor([[[0, -1]]])
    _, first = make_semantic_loss(maps, labels, LATENTS, distill_mask=torch.tensor([[[True, False]]]), **kwargs)(Out(), 0, None)
    _, every = make_semantic_loss(maps, labels, LATENTS, distill_mask=None, **kwargs)(Out(), 0, None)
    assert first["sem"] == pytest.approx(1.0)
    assert every["sem"] == pytest.approx((1.0 + 5.0) / 2)


def test_the_distilled_pixels_follow_crrs_decisions():
    # pixels: labelled with a mask feature, labelled with its own, ignored with a pooled feature, ignored with its own
    labels = torch.tensor([[[2, 0, -1, -1]]])
    reads = []

    def feature_source():
        reads.append(1)
        return torch.tensor([[[0, -1, 1, -1]]])

    assert distilled_pixels(labels, feature_source, "all") is None
    assert distilled_pixels(labels, feature_source, "labelled").tolist() == [[[True, True, False, False]]]
    assert not reads, "only labelled_or_pooled reads crr's feature sources"
    assert distilled_pixels(labels, feature_source, "labelled_or_pooled").tolist() == [[[True, True, True, False]]]
    with pytest.raises(EconsgError, match="distill_pixels"):
        distilled_pixels(labels, feature_source, "ignored")


def test_semantic_hook_distils_the_direction_when_asked():
    class Out:  # a render pointing the target's way at three times its length, and one at half its length
        features = torch.stack([3.0 * LATENTS[0], 0.5 * LATENTS[1]]).reshape(1, 1, 2, 3)

    maps = LATENTS[[0, 1]].reshape(1, 1, 2, 3)
    labels = torch.tensor([[[0, 1]]])
    kwargs = dict(lambda_sem=1.0, lambda_2d=0.0, dist="l1", temperature=0.1, ce_normalize=True)
    _, raw = make_semantic_loss(maps, labels, LATENTS, dist_normalize=False, **kwargs)(Out(), 0, None)
    _, direction = make_semantic_loss(maps, labels, LATENTS, dist_normalize=True, **kwargs)(Out(), 0, None)
    assert raw["sem"] == pytest.approx((2.0 + 0.5) / (2 * 3))  # mean |F - target| over pixels and channels
    assert direction["sem"] == pytest.approx(0.0, abs=1e-6)
    _, short = make_semantic_loss(0.3 * maps, labels, LATENTS, dist_normalize=True, **kwargs)(Out(), 0, None)
    assert short["sem"] == pytest.approx(0.0, abs=1e-6), "targets of raw length (unit_latents: false): directions too"


def test_ce_temperature_sharpens_the_term():
    rendered = unit([[1.0, 0.3, 0.0]]).reshape(1, 1, 3)  # leaning toward class 0, labelled 0
    labels = torch.tensor([[0]])
    raw_cosines = semantic_ce_loss(rendered, labels, LATENTS, 1.0, normalize=False)
    sharp = semantic_ce_loss(rendered, labels, LATENTS, 0.05, normalize=False)
    assert sharp.item() < 0.01 < raw_cosines.item()  # raw cosines barely separate the classes
    assert raw_cosines.item() > 0.5 * math.log(3)


def test_relevancy_is_high_where_the_query_explains_the_feature():
    features = LATENTS.clone()
    rel = relevancy(features, LATENTS[1], LATENTS, temperature=0.1)
    assert rel.argmax().item() == 1 and rel[1] > 0.9 and rel[0] < 0.1
    # a query equal to a canonical class is not compared with itself
    assert torch.allclose(relevancy(features, LATENTS[1], LATENTS[:2], 0.1), relevancy(features, LATENTS[1], LATENTS[:1], 0.1))
    assert segment_latent(features, LATENTS[[2, 0]]).tolist() == [1, 0, 0]


def test_several_texts_label_only_the_pixels_they_explain_better_than_the_vocabulary():
    features = unit([[1, 0.1, 0], [0, 1, 0], [0, 0, 1]])  # a wall, a sofa and a lamp pixel
    # texts "lamp" and "sofa" against the vocabulary {wall, sofa, lamp}: the wall pixel stays unlabelled
    assert segment_texts(features, LATENTS[[2, 1]], LATENTS).tolist() == [IGNORE, 1, 0]
    # without the canonical classes every pixel would go to one of the texts
    assert segment_latent(features, LATENTS[[2, 1]]).tolist() == [1, 1, 0]
    # a text the vocabulary lacks takes the pixels it is nearest to, and no others
    chair = unit([[0.2, 1, 0.1]])
    assert segment_texts(torch.cat([chair, features]), chair, LATENTS).tolist() == [0, IGNORE, IGNORE, IGNORE]


def test_edit_removes_exactly_the_selected_object():
    n = 10
    features = LATENTS[[0] * 6 + [1] * 4] + 0.05 * torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    params = {"means": torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3), "features": features,
              "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 3, 3), "opacities": torch.zeros(n)}
    selected = select_gaussians(features, LATENTS[1], LATENTS[[0, 2]], temperature=0.1, threshold=0.5)
    assert selected.tolist() == [False] * 6 + [True] * 4
    removed = apply_edit(params, selected, "remove")
    assert removed["means"][:, 0].tolist() == list(range(6))
    extracted = apply_edit(params, selected, "extract")
    assert extracted["means"][:, 0].tolist() == [6, 7, 8, 9]
    recoloured = apply_edit(params, selected, "recolour", (1.0, 0.0, 0.0))
    assert torch.all(recoloured["sh0"][6:, 0, 0] > 0) and torch.all(recoloured["sh0"][:6] == 0)
    assert torch.all(params["sh0"] == 0), "the input must not be modified"
    with pytest.raises(EconsgError, match="action: 'delete'"):
        apply_edit(params, selected, "delete")
    # an edit that would leave no Gaussian, or change nothing, is refused, not written
    with pytest.raises(EconsgError, match=r"remove: the text selects every Gaussian \(10\)"):
        apply_edit(params, torch.ones(n, dtype=torch.bool), "remove")
    with pytest.raises(EconsgError, match=r"extract: the text selects every Gaussian \(10\), so the edited scene would be "
                                          "the scene itself"):
        apply_edit(params, torch.ones(n, dtype=torch.bool), "extract")
    for action, outcome in (("extract", "leave an empty scene"), ("remove", "change nothing"), ("recolour", "change nothing")):
        with pytest.raises(EconsgError, match=rf"{action}: the text selects no Gaussian \(0 of 10\), so the edit would {outcome}"):
            apply_edit(params, torch.zeros(n, dtype=torch.bool), action)


def test_subset_scores_count_ignore_predictions_as_errors():
    gt = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, -1, 1, 1, 1, 2])
    confusion = confusion_matrix(pred, gt, 3)
    closed = subset_scores(confusion, [0, 1])
    assert closed["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert closed["macc"] == pytest.approx((1 / 2 + 1) / 2)
    absent = subset_scores(confusion_matrix(np.array([0]), np.array([0]), 3), [1, 2])
    assert math.isnan(absent["miou"]) and absent["classes"] == []


def test_a_pixel_no_gaussian_reached_gets_no_label_and_no_relevancy():
    """F = 0 (the background's feature) has no direction: argmax would hand such pixels to the first text."""
    from econsg.query import lerf_relevancy

    features = torch.cat([torch.zeros(1, 3), LATENTS[[0]], 1e-4 * LATENTS[[1]]])  # empty, a wall, a faint sofa
    assert segment_latent(features, LATENTS).tolist() == [IGNORE, 0, 1]
    assert segment_texts(features, LATENTS[[2, 1]], LATENTS).tolist() == [IGNORE, IGNORE, 1]
    assert relevancy(features, LATENTS[1], LATENTS, 0.1)[0] == 0 and relevancy(features, LATENTS[1], LATENTS, 0.1)[2] > 0.9
    assert lerf_relevancy(features, LATENTS[1], LATENTS[[0, 2]], 0.1)[0] == 0


def test_lerf_relevancy_is_the_smallest_pairwise_softmax_against_the_canonical_phrases():
    """LERF / LangSplat: for each canonical phrase, softmax over (query, phrase); the minimum over phrases."""
    from econsg.query import lerf_relevancy

    g = torch.Generator().manual_seed(0)
    features, query, canonical = torch.randn(7, 8, generator=g), torch.randn(8, generator=g), torch.randn(4, 8, generator=g)
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b[None], dim=-1)  # noqa: E731
    pairwise = torch.stack([torch.softmax(torch.stack([cos(features, query), cos(features, c)], -1) / 0.1, -1)[..., 0]
                            for c in canonical], -1)
    torch.testing.assert_close(lerf_relevancy(features, query, canonical, 0.1), pairwise.min(-1).values)


def test_query_texts_refuse_line_breaks_only():
    check_query_texts(["椅子\u3000の上", "a\u00a0chair", "zwnj\u200cword", "lamp [red]"])  # a text's own characters
    for text in ("wall\nfloor", "sofa\r", "tab\there", "line\u2028break"):
        with pytest.raises(EconsgError, match="holds a line break or another control character"):
            check_query_texts(["bed", text])
    with pytest.raises(EconsgError, match="expected a non-empty text"):
        check_query_texts([" "])


def test_a_near_synonym_canonical_class_still_competes_with_the_query():
    q = torch.tensor([1.0, 0.0])
    near = torch.tensor([[math.cos(0.1), math.sin(0.1)]])  # cos 0.995 to the query: another class, not the query
    r = relevancy(q[None], q, near, temperature=0.1)
    expected = 1 / (1 + math.exp((math.cos(0.1) - 1) / 0.1))  # softmax([1, 0.995] / 0.1)[0] = 0.5125
    assert float(r[0]) == pytest.approx(expected, rel=1e-5)
    assert float(relevancy(q[None], q, q[None].clone(), temperature=0.1)[0]) == 1.0  # the query itself is dropped
