from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db.models import Count, QuerySet
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.http import content_disposition_header
from django.views.decorators.cache import cache_control
from django.views.decorators.http import condition, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts.models import Role
from accounts.teams import for_team, team_object_or_404, team_required
from predictions.views import filter_form, render_chunk

from .filters import GalleryFilterForm
from .forms import BoardForm, ReturnForm, SelectionForm, ShareForm, StarForm, errors_as_text
from .models import THUMB_SIZES, ArchiveState, Board, Output, ShareLink, hash_token
from .zips import zip_response

VARIANTS = {"file", "download", *THUMB_SIZES}
YEAR = 365 * 24 * 3600
# The new share link's token, on its way from the form to the page that shows it once.
SHARE_TOKEN_COOKIE = "darkroom_new_share"
SHARE_TOKEN_COOKIE_AGE = 300
# Boards, share pages and zips list outputs as the gallery does: newest prediction first.
TILE_ORDER = ["-prediction__submitted_at", "-prediction_id", "index"]


@team_required()
def media(request, pk: int, variant: str):
    """An archived copy, a thumbnail of it, or the copy as a download; the team's own only."""
    queryset = Output.objects.select_related("prediction")
    output = team_object_or_404(request, queryset, pk=pk, state=ArchiveState.ARCHIVED)
    return serve_copy(output, variant)


def serve_copy(
    output: Output, variant: str, hide_prompt: bool = False, max_age: int = YEAR
) -> HttpResponse:
    """The stored file for `variant`: streamed from local storage (cached for `max_age`: its URL
    names its content), or a redirect to the bucket's own short-lived signed URL, cached for less
    than that URL lives. The caller has checked that the visitor may see `output`."""
    if variant not in VARIANTS or (variant in THUMB_SIZES and not output.has_thumbnails()):
        raise Http404("No such file.")
    name = output.stored_name("file" if variant == "download" else variant)
    content_type = "image/webp" if variant in THUMB_SIZES else output.content_type
    filename = output.file_name(hide_prompt)
    disposition = content_disposition_header(variant == "download", filename)
    if settings.ARCHIVE_SIGNED_URLS:
        parameters = {"ResponseContentType": content_type}
        if variant == "download":
            parameters["ResponseContentDisposition"] = disposition
        response = redirect(default_storage.url(name, parameters=parameters))
        patch_cache_control(response, private=True, max_age=settings.S3_URL_EXPIRY // 2)
        return response
    try:
        file = default_storage.open(name, "rb")
    except FileNotFoundError:
        raise Http404("The stored copy is missing.") from None
    response = FileResponse(file, content_type=content_type)
    response["Content-Disposition"] = disposition
    patch_cache_control(response, private=True, max_age=max_age, immutable=max_age == YEAR)
    return response


# --- The gallery -----------------------------------------------------------------------------


@team_required()
@cache_control(no_cache=True)
@vary_on_headers("HX-Request")
@condition(etag_func=lambda request: filter_form(request, GalleryFilterForm).version())
def gallery(request):
    form = filter_form(request, GalleryFilterForm)
    return render_chunk(request, form, "outputs/gallery.html", "tiles")


# --- Boards ----------------------------------------------------------------------------------


@team_required()
@require_http_methods(["GET", "POST"])
def boards(request):
    """The team's boards, and (members) a form to create one."""
    team = request.membership.team
    form = BoardForm(request.POST or None, team=team)
    if request.method == "POST":
        if not request.membership.can_submit:
            raise PermissionDenied("This needs the member role.")
        if form.is_valid() and (board := form.save(request.user)):
            messages.success(request, f"Created the board “{board.name}”.")
            return redirect(board)
    context = {"boards": Board.with_covers(for_team(request, Board.objects.all())), "form": form}
    return render(request, "outputs/boards.html", context, status=400 if form.errors else 200)


@team_required()
def board(request, pk: int):
    board = team_object_or_404(request, Board, pk=pk)
    return board_page(request, board)


def board_page(request, board: Board, rename_form: BoardForm | None = None):
    outputs = board.outputs.select_related("prediction", "prediction__submitted_by").order_by(
        *TILE_ORDER
    )
    context = {
        "board": board,
        "outputs": outputs,
        "rename_form": rename_form or BoardForm(team=board.team, board=board),
        "share_form": ShareForm(),
    }
    return render(
        request, "outputs/board.html", context, status=400 if rename_form is not None else 200
    )


@team_required(Role.MEMBER)
@require_POST
def rename_board(request, pk: int):
    board = team_object_or_404(request, Board, pk=pk)
    old_name = board.name
    form = BoardForm(request.POST, team=board.team, board=board)
    if not (form.is_valid() and form.save(request.user)):
        board.name = old_name
        return board_page(request, board, rename_form=form)
    messages.success(request, f"Renamed “{old_name}” to “{board.name}”.")
    return redirect(board)


@team_required(Role.MEMBER)
@require_POST
def delete_board(request, pk: int):
    """Deletes the board and its share links; the images stay in the gallery."""
    board = team_object_or_404(request, Board, pk=pk)
    board.delete()
    messages.success(request, f"Deleted “{board.name}”. Its images are still in the gallery.")
    return redirect("outputs:boards")


@team_required()
def board_download(request, pk: int):
    board = team_object_or_404(request, Board, pk=pk)
    outputs = board.archived_outputs().select_related("prediction").order_by(*TILE_ORDER)
    if not outputs:
        messages.error(request, "This board has no saved images to download yet.")
        return redirect(board)
    return zip_response(outputs, board.name)


@team_required(Role.MEMBER)
@require_POST
def share_board(request, pk: int):
    board = team_object_or_404(request, Board, pk=pk)
    form = ShareForm(request.POST)
    if not form.is_valid():
        messages.error(request, errors_as_text(form))
        return redirect(board)
    link, token = ShareLink.create(
        team=board.team,
        created_by=request.user,
        title=board.name,
        board=board,
        **form.link_fields(),
    )
    return share_created(request, link, token)


# --- The selection ---------------------------------------------------------------------------


@team_required()
@require_POST
def selection(request):
    """Acts on the ticked tiles. Viewers may only download; an output or board that is not the
    team's is a 404; anything else wrong goes back with a message."""
    form = SelectionForm(request.POST, request=request)
    valid = form.is_valid()
    if form.names_unknown():
        raise Http404("No such image or board in this team.")
    action = form.cleaned_data.get("action")
    if action != "download" and not request.membership.can_submit:
        raise PermissionDenied("This needs the member role.")
    if not valid:
        messages.error(request, errors_as_text(form))
        return redirect(form.return_url)
    outputs = list(form.cleaned_data["outputs"].order_by(*TILE_ORDER))
    if action == "download":
        if not any(output.is_archived for output in outputs):
            messages.error(request, "None of the selected images has a saved copy yet.")
            return redirect(form.return_url)
        return zip_response(outputs, "darkroom-selection")
    if action == "share":
        return share_selection(request, form, outputs)
    act_on_selection(request, form, outputs)
    return redirect(form.return_url)


def act_on_selection(request, form: SelectionForm, outputs: list[Output]) -> None:
    """Do a selection's add, remove, star, unstar or delete, and say what was done."""
    action = form.cleaned_data["action"]
    selected = Output.objects.filter(pk__in=[output.pk for output in outputs])
    if action == "add":
        board = form.cleaned_data["board"] or create_board(request, form)
        if board is None:
            name = form.cleaned_data["new_board"]
            messages.error(request, f"The team already has a board called “{name}”.")
            return
        done = f"Added {images(board.add(outputs))} to “{board.name}”."
    elif action == "remove":
        board = form.cleaned_data["board"]
        done = f"Removed {images(board.remove(outputs))} from “{board.name}”."
    elif action in ("star", "unstar"):
        count = Output.changed(selected, starred=action == "star")
        done = f"{'Starred' if action == 'star' else 'Unstarred'} {images(count)}."
    else:
        # One by one, so each output's stored files follow it (see signals.py).
        deleted = selected.delete()[1].get(Output._meta.label, 0)
        done = f"Deleted {images(deleted)}."
    messages.success(request, done)


def create_board(request, form: SelectionForm) -> Board | None:
    board_form = BoardForm({"name": form.cleaned_data["new_board"]}, team=request.membership.team)
    return board_form.save(request.user) if board_form.is_valid() else None


def share_selection(request, form: SelectionForm, outputs: list[Output]):
    link, token = ShareLink.create(
        team=request.membership.team,
        created_by=request.user,
        title=images(len(outputs)).capitalize(),
        **form.link_fields(),
    )
    link.outputs.set(outputs)
    return share_created(request, link, token)


def images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


# --- One output ------------------------------------------------------------------------------


@team_required(Role.MEMBER)
@require_POST
@vary_on_headers("HX-Request")
def star(request, pk: int):
    """Star or unstar one output: for htmx its star button, else back where it was pressed."""
    output = team_object_or_404(request, Output.objects.select_related("prediction"), pk=pk)
    form = StarForm(request.POST, request=request, default=output.prediction.get_absolute_url())
    if not form.is_valid():
        if request.htmx:
            return HttpResponseBadRequest(errors_as_text(form), content_type="text/plain")
        messages.error(request, errors_as_text(form))
        return redirect(form.return_url)
    output.starred = form.cleaned_data["starred"]
    Output.changed(Output.objects.filter(pk=output.pk), starred=output.starred)
    if request.htmx:
        context = {"output": output, "next": form.cleaned_data["next"]}
        return render(request, "outputs/_star.html", context)
    return redirect(form.return_url)


@team_required(Role.MEMBER)
@require_POST
def delete(request, pk: int):
    """Deletes one output; its stored files go too unless another output shares them."""
    output = team_object_or_404(request, Output.objects.select_related("prediction"), pk=pk)
    form = ReturnForm(request.POST, request=request, default=output.prediction.get_absolute_url())
    output.delete()
    messages.success(request, "Deleted the image.")
    return redirect(form.return_url)


# --- Share links -----------------------------------------------------------------------------


def share_created(request, link: ShareLink, token: str):
    """Redirect to the new link's page, handing it the token in a short-lived signed cookie: a
    reload then sends no form again (no second link), and the token is never stored here."""
    response = redirect("outputs:share_created", link.pk)
    response.set_signed_cookie(
        SHARE_TOKEN_COOKIE,
        token,
        salt=f"share-{link.pk}",
        max_age=SHARE_TOKEN_COOKIE_AGE,
        path=reverse("outputs:share_created", args=[link.pk]),
        secure=request.is_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


@team_required()
def share_created_page(request, pk: int):
    """The new link, shown once: the cookie is spent by this page, and only a hash is kept."""
    link = get_object_or_404(shares_for(request), pk=pk)
    token = request.get_signed_cookie(
        SHARE_TOKEN_COOKIE, default=None, salt=f"share-{pk}", max_age=SHARE_TOKEN_COOKIE_AGE
    )
    url = None
    if token and hash_token(token) == link.token_hash:
        url = request.build_absolute_uri(reverse("outputs:shared", args=[token]))
    response = render(request, "outputs/share_created.html", {"link": link, "url": url})
    response.delete_cookie(SHARE_TOKEN_COOKIE, path=request.path, samesite="Strict")
    # The page holds the token: keep it out of caches and other sites' Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def shares_for(request) -> QuerySet:
    """The links this visitor may see and revoke: all of the team's for an owner, else their
    own."""
    links = for_team(request, ShareLink.objects.all())
    return links if request.membership.is_owner else links.filter(created_by=request.user)


@team_required()
def shares(request):
    links = shares_for(request).select_related("board", "created_by")
    # Explicitly ordered: a query with an aggregate ignores the model's default ordering.
    links = links.annotate(output_count=Count("outputs")).order_by("-created_at", "-id")
    return render(request, "outputs/shares.html", {"links": links})


@team_required()
@require_POST
def revoke_share(request, pk: int):
    link = get_object_or_404(shares_for(request), pk=pk)
    if link.revoke():
        messages.success(request, f"Revoked “{link.title}”: the link now answers 404.")
    return redirect("outputs:shares")


def share_or_404(request, token: str) -> ShareLink:
    """The active link with this token. A share page acts for no team, whoever is signed in:
    nothing of the visitor's own team can show on it, and the header shows no team menu."""
    request.membership = None
    link = ShareLink.find(token)
    if link is None:
        raise Http404("This link does not exist, has expired or was revoked.")
    return link


def public(response: HttpResponse) -> HttpResponse:
    """A share page's headers: the token in its URL must not leak to other sites, and search
    engines should not index it."""
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@cache_control(private=True, no_cache=True)
def shared(request, token: str):
    """The public, read-only page of a share link."""
    link = share_or_404(request, token)
    outputs = list(
        link.shared_outputs()
        .select_related("prediction", "prediction__submitted_by")
        .order_by(*TILE_ORDER)
    )
    link.record_view()
    # The preview a chat or social site shows for the link: the first image's thumbnail.
    cover = next((output for output in outputs if output.has_thumbnails()), None)
    og_image = cover and request.build_absolute_uri(
        reverse("outputs:shared_media", args=[token, cover.pk, "thumb"])
    )
    if link.hide_prompts or not outputs:
        description = f"{images(len(outputs)).capitalize()} shared from Darkroom"
    else:
        description = outputs[0].prediction.prompt
    context = {
        "link": link,
        "outputs": outputs,
        "share_token": token,
        "hide_prompts": link.hide_prompts,
        "demo_provider": False,
        "cover": cover,
        "og_image": og_image,
        "og_description": description,
    }
    return public(render(request, "outputs/shared.html", context))


def shared_media(request, token: str, pk: int, variant: str):
    link = share_or_404(request, token)
    output = get_object_or_404(link.shared_outputs().select_related("prediction"), pk=pk)
    # Briefly: a revoked link should stop working in browsers that saw it, too.
    return public(serve_copy(output, variant, hide_prompt=link.hide_prompts, max_age=300))


@cache_control(private=True, no_cache=True)
def shared_download(request, token: str):
    """Everything a share link shows, as one zip."""
    link = share_or_404(request, token)
    outputs = link.shared_outputs().select_related("prediction").order_by(*TILE_ORDER)
    return public(zip_response(outputs, link.title, hide_prompts=link.hide_prompts))
