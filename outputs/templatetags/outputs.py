"""Where a page finds an output's files: the team's URLs, or a share link's on a public page.

An output is shown from Darkroom's copy once it exists, and never from the provider's URL again;
until then from the provider's URL, while the provider still has the file.
"""

from django import template
from django.urls import reverse
from django.utils import timezone

from outputs.models import ArchiveState, Output

register = template.Library()


@register.simple_tag(takes_context=True)
def media_url(context, output: Output, variant: str = "file") -> str:
    """The archived copy (or thumbnail, or download) of `output` as this page may link it: on a
    share page (`share_token` in the context) through the share link, else the team's URL."""
    if token := context.get("share_token"):
        path = reverse("outputs:shared_media", args=[token, output.pk, variant])
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
