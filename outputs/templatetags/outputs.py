"""Where a page finds an output's files: the team's URLs, or a share link's on a public page.

An output is shown from Darkroom's copy once it exists, and never from the provider's URL again;
until then from the provider's URL, while the provider still has the file.
"""

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from django import template
from django.template.defaultfilters import floatformat
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from dashboard.paths import path_to
from outputs.models import ArchiveState, Output
from predictions.models import Prediction

if TYPE_CHECKING:
    from costs.reports import ShownCost

register = template.Library()


@register.simple_tag(takes_context=True)
def media_url(context, output: Output, variant: str = "file") -> str:
    """The archived copy (or thumbnail, or download) of `output` as this page may link it: on a
    share page (`share_token` in the context) through the share link, else the team's URL."""
    if token := context.get("share_token"):
        path = path_to("outputs:shared_media", token, output.pk, variant)
        return f"{path}?v={output.sha256[:16]}"
    return output.url(variant)


@register.simple_tag(takes_context=True)
def preview_url(context, output: Output, variant: str = "thumb") -> str:
    """What an <img> shows: the archived copy's thumbnail `variant` (`file` for the copy itself);
    until it is archived, the provider's URL while the provider still has the file; else
    nothing. Nothing for what is not an image, either."""
    if output.kind != "image":
        return ""
    if output.is_archived:
        return media_url(context, output, variant)
    return provider_url(context, output)


@register.simple_tag(takes_context=True)
def full_url(context, output: Output) -> str:
    """What the lightbox and a plain link open: the copy, else the provider's URL while it
    lasts, else nothing."""
    if output.is_archived:
        return media_url(context, output, "file")
    return provider_url(context, output)


def provider_url(context, output: Output) -> str:
    # Share pages show archived copies only; a file the provider removed would be broken.
    if context.get("share_token") or not output.at_provider:
        return ""
    return output.source_url


@register.filter
def archive_state(output: Output) -> str:
    """What a page says about an output that is not archived: saving, why it failed and what
    happens next, or that the provider removed it first. Empty once archived."""
    if output.state == ArchiveState.PENDING:
        return "Saving…"
    if output.state == ArchiveState.FAILED:
        reason = (output.reason or "The download failed").rstrip(".")
        if output.next_attempt_at is None:
            return f"Not saved: {reason}. Gave up."
        retry = timezone.localtime(output.next_attempt_at).strftime("%H:%M")
        return f"Not saved: {reason}. Retrying at {retry}."
    if output.state == ArchiveState.EXPIRED:
        return "Expired at the provider before Darkroom could save it."
    return ""


@register.filter
def archiving(outputs) -> bool:
    """Whether any of `outputs` will be tried again: a page showing them keeps refreshing until
    each one is saved or given up."""
    return any(output.retrying for output in outputs)


@dataclass
class Tile:
    """What a tile (outputs/_tile.html) shows of one output, worked out in one call: as a
    dozen conditions and URLs in the template, they were most of the gallery's rendering."""

    prediction: Prediction
    kind: str
    # What the page says about the copy (archive_state): empty once archived.
    state: str
    # Where the link goes without JavaScript.
    href: str
    # What the <img> shows (preview_url), and its size; no <img> without one.
    src: str
    size: tuple[int, int]
    # The <img>'s text, where no caption names the link.
    alt: str
    # The data attributes static/js/gallery.js fills the lightbox from, as text only.
    data: str
    caption: bool
    # Who asked for it, on the team's pages only.
    member: str
    # The cost, where the page fetched it (costs' `loaded_cost`), on the team's pages only.
    cost: "ShownCost | None"
    star: bool
    # The state under the tile (not on the prediction's own page, which says more).
    state_shown: bool
    number: int


# Until the copy is saved its size is not known, the tile's box is.
PROVIDER_FILE_SIZE = (512, 512)


@register.simple_tag(takes_context=True)
def tile(context, output: Output, cost: "ShownCost | None" = None) -> Tile:
    """`output` as a tile of this page: `share_token` (a share page), `hide_prompts` (one that
    hides them) and `in_prediction` (the prediction's own page) from the context."""
    prediction = output.prediction
    share_token = context.get("share_token")
    hide_prompts = context.get("hide_prompts")
    in_prediction = context.get("in_prediction")
    kind, state, full = output.kind, archive_state(output), full_url(context, output)
    prediction_url = path_to("predictions:detail", prediction.pk)
    submitter = prediction.submitted_by
    member = "" if share_token else (submitter and submitter.get_username()) or "—"
    cost = None if share_token else cost
    data = {"output": output.pk, "kind": kind, "image": full}
    if output.is_archived and output.width and output.height:
        data |= {"width": output.width, "height": output.height}
    data["download"] = media_url(context, output, "download") if output.is_archived else ""
    data["state"] = state
    if not share_token and not in_prediction:
        data["open"] = prediction_url
    if not hide_prompts:
        data |= {"prompt": prediction.prompt, "model": prediction.model}
        if not share_token:
            data["member"] = member
        data |= {
            "input": prediction.input_json,
            "predict-time": floatformat(prediction.predict_time, "2u"),
            "image-count": "" if prediction.image_count is None else prediction.image_count,
        }
        if cost:
            data |= {"cost": cost.text, "cost-note": cost.note}
    number = output.index + 1
    return Tile(
        prediction=prediction,
        kind=kind,
        state=state,
        href=(full or prediction_url) if share_token or in_prediction else prediction_url,
        src=preview_url(context, output),
        size=output.thumb_size() if output.is_archived else PROVIDER_FILE_SIZE,
        alt=f"Output {number}" if hide_prompts or in_prediction else "",
        data=data_attributes(data),
        caption=not hide_prompts and not in_prediction,
        member=member,
        cost=cost,
        star=not share_token,
        state_shown=bool(state) and not in_prediction,
        number=number,
    )


def data_attributes(data: dict) -> str:
    """`data` as data-* attributes, escaped as the template would escape them: by the function
    behind Django's escape(), whose check for lazy strings costs more than the escaping."""
    return mark_safe("".join(f' data-{key}="{escape(str(value))}"' for key, value in data.items()))


@register.simple_tag(takes_context=True)
def star(context, output: Output) -> str:
    """One output's star: a toggle button for members (htmx swaps in the answer; without
    JavaScript the form posts and comes back to `next`, else to this page), the state only for
    everyone else. A string rather than an included template: every tile of a page has one."""
    request = context["request"]
    starred = output.starred
    if not request.membership.can_submit:
        return STARRED if starred else ""
    action = path_to("outputs:star", output.pk)
    return format_html(
        STAR_FORM,
        action=action,
        csrf_token=context.get("csrf_token"),
        starred="0" if starred else "1",
        next=context.get("next") or request.get_full_path(),
        pressed="true" if starred else "false",
        title="Starred: press to unstar" if starred else "Star this image",
        glyph="★" if starred else "☆",
    )


STAR_FORM = """
<form class="star-form" method="post" action="{action}" hx-post="{action}" hx-swap="outerHTML">
  <input type="hidden" name="csrfmiddlewaretoken" value="{csrf_token}">
  <input type="hidden" name="starred" value="{starred}">
  <input type="hidden" name="next" value="{next}">
  <button type="submit" class="star link" aria-label="Star" aria-pressed="{pressed}"
    title="{title}">{glyph}</button>
</form>
"""
STARRED = mark_safe(
    '<span class="star" title="Starred">★<span class="visually-hidden"> Starred</span></span>'
)
