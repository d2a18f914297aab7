"""Share links: created once, opened signed out, counted, expired, revoked, and never showing
more than was shared (nor, when hidden, any prompt)."""

import hashlib
import io
import re
import zipfile
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from outputs.models import Board, Output, ShareLink

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

SECRET_PROMPT = "a lighthouse built from forgotten passwords"
SECRET_INPUT = {"prompt": SECRET_PROMPT, "seed": 987654321, "negative_prompt": "blurry krakens"}


def finished(prompt: str = "a lighthouse at dusk", images: int = 1, **fields) -> list[Output]:
    prediction = make_prediction(prompt, status="succeeded", **fields)
    return [make_output(prediction) for _ in range(images)]


def board_with(team, name: str, outputs: list[Output]) -> Board:
    board = Board.objects.create(team=team, name=name)
    board.add(outputs)
    return board


def share_board(client, board: Board, **options) -> tuple[ShareLink, str]:
    """Shares `board` through the page's form; the link and the URL shown once."""
    response = client.post(f"/boards/{board.pk}/share", options, follow=True)
    assert response.redirect_chain[-1][0].endswith("/created"), response.content.decode()[:300]
    url = re.search(
        r'id="share-url" type="text" readonly value="([^"]+)"', response.content.decode()
    )
    return ShareLink.objects.latest("id"), unescape(url[1])


def path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


def tile_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'id="tile-(\d+)"', html)]


def test_a_board_share_opens_signed_out_read_only_and_counts_views(client, team):
    outputs = finished(images=2)
    finished("not on the board")
    board = board_with(team, "Lighthouses", outputs)
    link, url = share_board(client, board)

    visitor = Client()
    first = visitor.get(path_of(url))
    visitor.get(path_of(url))

    assert first.status_code == 200
    html = first.content.decode()
    assert sorted(tile_ids(html)) == sorted(o.pk for o in outputs)
    assert "not on the board" not in html
    assert 'name="outputs"' not in html  # nothing to select
    assert 'id="selection"' not in html
    assert html.count('<dialog id="lightbox"') == 1
    assert first["Referrer-Policy"] == "no-referrer"
    assert '<meta name="robots" content="noindex">' in html
    assert "script-src 'self'" in first["Content-Security-Policy"]
    link.refresh_from_db()
    assert link.views == 2
    assert link.last_viewed_at is not None


def test_the_link_is_shown_once_and_only_a_hash_of_its_token_is_stored(client, team):
    board = board_with(team, "Lighthouses", finished())

    response = client.post(f"/boards/{board.pk}/share", {}, follow=True)
    html = response.content.decode()

    token = re.search(r"http://testserver/s/([\w-]+)/", html)[1]
    link = ShareLink.objects.get()
    assert len(token) >= 43  # 256 bits in base64
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(ShareLink.objects.values().get())
    assert token not in str(response.cookies)  # the cookie that carried it is spent
    assert "Darkroom stores only a hash of it" in html
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert token not in client.get("/shares/").content.decode()


def test_a_share_page_links_its_images_through_the_share_and_serves_them_signed_out(client, team):
    (output,) = finished()
    _, url = share_board(client, board_with(team, "Lighthouses", [output]))
    token = path_of(url).split("/")[2]
    visitor = Client()

    html = visitor.get(path_of(url)).content.decode()
    thumb = visitor.get(f"/s/{token}/{output.pk}/thumb")
    download = visitor.get(f"/s/{token}/{output.pk}/download")

    assert f"/s/{token}/{output.pk}/thumb?v=" in html
    assert f"/outputs/{output.pk}/" not in html  # never the team's own URLs
    assert thumb.status_code == 200
    assert thumb["Content-Type"] == "image/webp"
    assert thumb["Referrer-Policy"] == "no-referrer"
    assert download["Content-Disposition"] == 'attachment; filename="a-lighthouse-at-dusk-1.png"'


def test_a_share_page_has_open_graph_tags_with_an_absolute_preview_image(client, team):
    (output,) = finished("a lighthouse at dusk")
    _, url = share_board(client, board_with(team, "Lighthouses", [output]))
    token = path_of(url).split("/")[2]

    html = Client().get(path_of(url)).content.decode()

    og = dict(re.findall(r'<meta property="og:([\w:]+)" content="([^"]*)">', html))
    assert og["title"] == "Lighthouses"
    assert og["type"] == "website"
    assert og["url"] == url
    assert og["image"] == f"http://testserver/s/{token}/{output.pk}/thumb"
    assert og["description"] == "a lighthouse at dusk"
    assert Client().get(path_of(og["image"])).status_code == 200


def test_a_signed_in_visitor_sees_a_share_page_without_any_team_menu(client, team):
    _, url = share_board(client, board_with(team, "Lighthouses", finished()))
    Board.objects.create(team=team, name="Private plans")

    html = client.get(path_of(url)).content.decode()

    assert 'aria-label="Main"' not in html
    assert "Private plans" not in html
    assert team.name not in html


def test_an_expired_link_answers_404_everywhere(client, team):
    (output,) = finished()
    link, url = share_board(client, board_with(team, "Lighthouses", [output]), expires_in="1")
    assert timedelta(hours=23) < link.expires_at - timezone.now() <= timedelta(days=1)
    visitor = Client()
    assert visitor.get(path_of(url)).status_code == 200

    ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    for suffix in ["", "download", f"{output.pk}/thumb"]:
        assert visitor.get(path_of(url) + suffix).status_code == 404, suffix
    link.refresh_from_db()
    assert link.status == "expired"
    assert link.views == 1


def test_a_revoked_link_answers_404_everywhere(client, team):
    (output,) = finished()
    link, url = share_board(client, board_with(team, "Lighthouses", [output]))

    response = client.post(f"/shares/{link.pk}/revoke")

    assert response.status_code == 302
    visitor = Client()
    for suffix in ["", "download", f"{output.pk}/file"]:
        assert visitor.get(path_of(url) + suffix).status_code == 404, suffix
    link.refresh_from_db()
    assert link.status == "revoked"


def test_an_unknown_token_answers_404():
    (output,) = finished()

    assert Client().get("/s/not-a-token-anyone-was-given/").status_code == 404
    assert Client().get(f"/s/not-a-token-anyone-was-given/{output.pk}/thumb").status_code == 404


def test_media_of_an_output_not_in_the_share_answers_404(client, team):
    shared, other = finished(images=2)
    (elsewhere,) = finished(team=make_team("Elsewhere"))
    _, url = share_board(client, board_with(team, "Lighthouses", [shared]))

    for output in (other, elsewhere):
        for variant in ("file", "thumb", "download"):
            assert Client().get(f"{path_of(url)}{output.pk}/{variant}").status_code == 404


def test_a_token_for_one_board_never_opens_another(client, team):
    first = board_with(team, "First", finished("first board"))
    second = board_with(team, "Second", finished("second board"))
    _, first_url = share_board(client, first)
    share_board(client, second)

    html = Client().get(path_of(first_url)).content.decode()

    assert tile_ids(html) == [first.outputs.get().pk]
    assert "second board" not in html
    second_output = second.outputs.get()
    assert Client().get(f"{path_of(first_url)}{second_output.pk}/file").status_code == 404


def test_a_board_share_shows_the_board_as_it_is_and_only_archived_copies(client, team):
    (output,) = finished()
    board = board_with(team, "Lighthouses", [output])
    _, url = share_board(client, board)
    (added_later,) = finished("added later")
    pending = Output.objects.create(
        team=team, prediction=output.prediction, index=7, source_url="https://x.test/p.png"
    )
    board.add([added_later, pending])
    board.remove([output])

    html = Client().get(path_of(url)).content.decode()

    assert tile_ids(html) == [added_later.pk]
    assert Client().get(f"{path_of(url)}{pending.pk}/file").status_code == 404


def test_a_selection_share_shows_only_the_selected_images(client, team):
    chosen = finished(images=2)
    (left_out,) = finished("left out")

    response = client.post(
        "/outputs/selection",
        {"action": "share", "outputs": [o.pk for o in chosen], "expires_in": "7"},
        follow=True,
    )

    assert response.status_code == 200
    link = ShareLink.objects.get()
    assert link.board is None
    assert link.title == "2 images"
    assert timedelta(days=6) < link.expires_at - timezone.now() <= timedelta(days=7)
    url = re.search(r'readonly value="([^"]+)"', response.content.decode())[1]
    html = Client().get(path_of(url)).content.decode()
    assert sorted(tile_ids(html)) == sorted(o.pk for o in chosen)
    assert Client().get(f"{path_of(url)}{left_out.pk}/file").status_code == 404


def test_a_hidden_prompt_share_shows_no_prompt_or_input_in_its_html_or_file_names(client, team):
    outputs = finished(SECRET_PROMPT, images=2, input=SECRET_INPUT)
    _, url = share_board(client, board_with(team, "Lighthouses", outputs), hide_prompts="on")
    visitor = Client()
    secrets = ["forgotten", "passwords", "987654321", "krakens", "negative_prompt", "seed"]

    page = visitor.get(path_of(url))
    html = page.content.decode()
    downloads = [visitor.get(f"{path_of(url)}{o.pk}/download") for o in outputs]
    files = [visitor.get(f"{path_of(url)}{o.pk}/file") for o in outputs]
    archive = visitor.get(f"{path_of(url)}download")
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as zipped:
        entry_names = zipped.namelist()

    assert sorted(tile_ids(html)) == sorted(o.pk for o in outputs)
    names = [r["Content-Disposition"] for r in downloads + files] + entry_names
    assert names[0] == f'attachment; filename="darkroom-{outputs[0].prediction_id}-1.png"'
    for text in [html, *names]:
        for secret in secrets:
            assert secret not in text, (secret, text[:200])


def test_a_share_that_shows_prompts_names_its_files_after_them(client, team):
    outputs = finished(SECRET_PROMPT, images=1, input=SECRET_INPUT)
    _, url = share_board(client, board_with(team, "Lighthouses", outputs))

    html = Client().get(path_of(url)).content.decode()
    archive = Client().get(f"{path_of(url)}download")

    assert SECRET_PROMPT in html  # the test above would notice a prompt
    assert archive["Content-Disposition"] == 'attachment; filename="lighthouses.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as zipped:
        assert zipped.namelist() == ["a-lighthouse-built-from-forgotten-passwords-1.png"]


def test_a_viewer_cannot_create_a_share_link(team):
    board = board_with(team, "Lighthouses", finished())
    viewer = Client()
    viewer.force_login(make_user("vic", team, Role.VIEWER))

    assert viewer.post(f"/boards/{board.pk}/share", {}).status_code == 403
    assert not ShareLink.objects.exists()


def test_owners_see_all_of_the_teams_links_and_members_only_their_own(client, team, member):
    board = board_with(team, "Lighthouses", finished())
    other_member = Client()
    other_member.force_login(make_user("max", team, Role.MEMBER))
    owner = Client()
    owner.force_login(make_user("otto", team, Role.OWNER))
    outsider = Client()
    outsider.force_login(make_user("olga", make_team("Elsewhere"), Role.OWNER))
    mine, _ = share_board(client, board)
    theirs, _ = share_board(other_member, Board.objects.create(team=team, name="Harbours"))

    def titles(client) -> list[str]:
        html = client.get("/shares/").content.decode()
        return re.findall(r"<tr>\s*<td>([^<]+)<", html)

    assert sorted(titles(owner)) == ["Harbours", "Lighthouses"]
    assert titles(client) == ["Lighthouses"]
    assert titles(other_member) == ["Harbours"]
    assert titles(outsider) == []
    html = owner.get("/shares/").content.decode()
    assert ">mia<" in html and ">max<" in html
    assert f"/shares/{mine.pk}/revoke" in html and f"/shares/{theirs.pk}/revoke" in html


def test_the_shares_page_shows_what_each_link_shows_its_expiry_views_and_status(client, team):
    board = board_with(team, "Lighthouses", finished())
    board_link, url = share_board(client, board, expires_in="30")
    client.post(
        "/outputs/selection",
        {"action": "share", "outputs": [o.pk for o in finished(images=3)]},
    )
    revoked, _ = share_board(client, board)
    revoked.revoke()
    Client().get(path_of(url))

    html = client.get("/shares/").content.decode()

    rows = re.findall(r"<tr>(.*?)</tr>", html, re.DOTALL)[1:]
    assert len(rows) == 3
    revoked_row, selection_row, board_row = rows
    assert "Revoked" in revoked_row and "/revoke" not in revoked_row
    assert "3 images" in selection_row and "Never" in selection_row and "Active" in selection_row
    assert f'href="/boards/{board.pk}/">Lighthouses</a>' in board_row
    assert board_link.expires_at.strftime("%Y-%m-%d") in board_row
    assert '<td class="num">1</td>' in board_row


def test_a_member_revokes_their_own_link_but_not_another_members(client, team):
    board = board_with(team, "Lighthouses", finished())
    mine, _ = share_board(client, board)
    other_member = Client()
    other_member.force_login(make_user("max", team, Role.MEMBER))
    theirs, _ = share_board(other_member, board)

    assert client.post(f"/shares/{theirs.pk}/revoke").status_code == 404
    assert client.post(f"/shares/{mine.pk}/revoke").status_code == 302
    theirs.refresh_from_db()
    mine.refresh_from_db()
    assert theirs.status == "active"
    assert mine.status == "revoked"


def test_an_owner_revokes_any_link_of_the_team(client, team):
    link, _ = share_board(client, board_with(team, "Lighthouses", finished()))
    owner = Client()
    owner.force_login(make_user("otto", team, Role.OWNER))

    assert owner.post(f"/shares/{link.pk}/revoke").status_code == 302
    link.refresh_from_db()
    assert link.status == "revoked"


def test_another_teams_link_cannot_be_revoked(client, team):
    link, _ = share_board(client, board_with(team, "Lighthouses", finished()))
    outsider = Client()
    outsider.force_login(make_user("olga", make_team("Elsewhere"), Role.OWNER))

    assert outsider.post(f"/shares/{link.pk}/revoke").status_code == 404
    link.refresh_from_db()
    assert link.status == "active"


def test_a_share_page_never_names_the_members_who_made_the_images(client, team, member):
    outputs = finished("a harbour at dawn", submitted_by=member)
    _, url = share_board(client, board_with(team, "Harbours", outputs))

    html = Client().get(path_of(url)).content.decode()

    assert "a harbour at dawn" in html
    assert member.username not in html


def test_the_page_that_showed_a_new_link_shows_it_only_once_and_a_reload_makes_no_second_link(
    client, team
):
    board = board_with(team, "Once", finished())
    link, url = share_board(client, board)

    again = client.get(f"/shares/{link.pk}/created").content.decode()

    assert url not in again
    assert f"/s/{url.split('/s/')[1][:4]}…" in again
    assert "was shown once" in again
    assert ShareLink.objects.count() == 1


def test_the_shares_page_tells_links_apart_by_how_their_tokens_start(client, team):
    board = board_with(team, "Twice", finished())
    urls = [share_board(client, board)[1] for _ in range(2)]

    html = client.get("/shares/").content.decode()

    for url in urls:
        assert f"/s/{url.split('/s/')[1][:4]}…" in html
        assert url.split("/s/")[1].strip("/") not in html
