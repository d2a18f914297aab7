"""Boards, the selection toolbar's actions, stars, deleting outputs and predictions, and zips."""

import io
import os
import re
import zipfile
from html import unescape

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from accounts.models import Role
from outputs.models import ArchiveState, Board, Output
from outputs.zips import CHUNK_SIZE, entry_names, zip_chunks
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def finished(prompt: str = "a lighthouse at dusk", images: int = 1, **fields) -> list[Output]:
    """A succeeded prediction with `images` archived outputs."""
    prediction = make_prediction(prompt, status="succeeded", **fields)
    return [make_output(prediction) for _ in range(images)]


def signed_in(team, role: str = Role.MEMBER, name: str = "vic") -> Client:
    client = Client()
    client.force_login(make_user(name, team, role))
    return client


def select(client, action: str, outputs, **fields):
    data = {"action": action, "outputs": [o.pk for o in outputs], **fields}
    return client.post("/outputs/selection", data)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.wsgi_request._messages]


def noise_png(size: int = 300) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, "PNG")
    return buffer.getvalue()


# --- Boards ----------------------------------------------------------------------------------


def test_a_member_creates_a_board_and_finds_it_listed_with_its_count_and_cover(client, team):
    response = client.post("/boards/", {"name": "Lighthouses"})

    board = Board.objects.get(team=team, name="Lighthouses")
    assert response.status_code == 302
    assert response["Location"] == f"/boards/{board.pk}/"
    first, second = finished(images=2)
    board.add([first, second])

    html = client.get("/boards/").content.decode()

    assert "Lighthouses" in html
    assert "2 images" in html
    # The newest added image with a thumbnail is the cover, with its size reserved.
    cover = re.search(r'<span class="board-cover"><img src="([^"]+)"[^>]*width="(\d+)"', html)
    assert cover and unescape(cover[1]).startswith(f"/outputs/{second.pk}/thumb?v=")


def test_boards_are_listed_by_name(client, team):
    for name in ["Harbours", "Beacons", "Lighthouses"]:
        board_with_images = Board.objects.create(team=team, name=name)
        board_with_images.add(finished(name))

    html = client.get("/boards/").content.decode()

    assert re.findall(r'<span class="board-name">(\w+)</span>', html) == [
        "Beacons",
        "Harbours",
        "Lighthouses",
    ]


def test_a_board_name_already_taken_in_the_team_is_a_form_error_not_a_500(client, team):
    Board.objects.create(team=team, name="Lighthouses")

    response = client.post("/boards/", {"name": "lighthouses"})

    assert response.status_code == 400
    assert "already has a board called" in response.content.decode()
    assert Board.objects.filter(team=team).count() == 1


def test_another_team_may_use_the_same_board_name(client, team):
    Board.objects.create(team=make_team("Elsewhere"), name="Lighthouses")

    response = client.post("/boards/", {"name": "Lighthouses"})

    assert response.status_code == 302
    assert Board.objects.filter(team=team, name="Lighthouses").exists()


def test_a_viewer_sees_the_boards_but_cannot_create_one(team):
    Board.objects.create(team=team, name="Lighthouses")
    viewer = signed_in(team, Role.VIEWER)

    assert "Lighthouses" in viewer.get("/boards/").content.decode()
    assert viewer.post("/boards/", {"name": "Mine"}).status_code == 403
    assert not Board.objects.filter(name="Mine").exists()


def test_a_member_renames_a_board_unless_the_name_is_taken(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    Board.objects.create(team=team, name="Harbours")

    taken = client.post(f"/boards/{board.pk}/rename", {"name": "Harbours"})
    renamed = client.post(f"/boards/{board.pk}/rename", {"name": "Beacons"})

    assert taken.status_code == 400
    assert "already has a board called" in taken.content.decode()
    assert renamed.status_code == 302
    board.refresh_from_db()
    assert board.name == "Beacons"


def test_deleting_a_board_keeps_its_images(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    (output,) = finished()
    board.add([output])

    response = client.post(f"/boards/{board.pk}/delete")

    assert response.status_code == 302
    assert not Board.objects.filter(pk=board.pk).exists()
    assert Output.objects.filter(pk=output.pk).exists()


def test_a_board_page_shows_its_tiles_selectable_with_the_lightbox_and_the_toolbar(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    on_board = finished("a lighthouse at dusk", images=2)
    finished("a harbour at dawn")
    board.add(on_board)

    html = client.get(f"/boards/{board.pk}/").content.decode()

    assert re.findall(r'name="outputs" value="(\d+)" form="selection"', html) == [
        str(o.pk) for o in on_board
    ]
    assert "a harbour at dawn" not in html
    assert html.count('<dialog id="lightbox"') == 1
    assert '<form id="selection" method="post" action="/outputs/selection"' in html.replace(
        ' class="selection"', ""
    )
    # The board list preselects this board, for Remove.
    assert f'<option value="{board.pk}" selected>Lighthouses</option>' in html
    # The board's own buttons and the toolbar's say which images they take.
    assert ">Download board</a>" in html and ">Share board</button>" in html
    assert ">Download ticked</button>" in html and ">Share ticked</button>" in html


def test_the_toolbar_lists_only_the_teams_boards(client, team):
    Board.objects.create(team=team, name="Lighthouses")
    other = Board.objects.create(team=make_team("Elsewhere"), name="Secret plans")
    board = Board.objects.create(team=team, name="Harbours")

    html = client.get(f"/boards/{board.pk}/").content.decode()

    assert "Lighthouses" in html
    assert other.name not in html


# --- The selection ---------------------------------------------------------------------------


def test_selected_images_are_added_to_a_board_in_bulk_and_only_once(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    outputs = finished(images=3)
    board.add(outputs[:1])

    response = select(client, "add", outputs, board=board.pk, next="/boards/")

    assert response.status_code == 302
    assert response["Location"] == "/boards/"
    assert set(board.outputs.all()) == set(outputs)
    assert messages_of(response) == ["Added 2 images to “Lighthouses”."]


def test_selected_images_go_to_a_new_board_named_in_the_toolbar(client, team, member):
    outputs = finished(images=2)

    select(client, "add", outputs, new_board="Beacons")

    board = Board.objects.get(team=team, name="Beacons")
    assert board.created_by == member
    assert set(board.outputs.all()) == set(outputs)


def test_selected_images_are_removed_from_a_board_in_bulk(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    outputs = finished(images=3)
    board.add(outputs)

    response = select(client, "remove", outputs[:2], board=board.pk)

    assert list(board.outputs.all()) == outputs[2:]
    assert messages_of(response) == ["Removed 2 images from “Lighthouses”."]
    assert Output.objects.filter(pk__in=[o.pk for o in outputs]).count() == 3


def test_another_teams_output_cannot_be_added_to_your_board(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    (mine,) = finished()
    (theirs,) = finished(team=make_team("Elsewhere"))

    response = select(client, "add", [mine, theirs], board=board.pk)

    assert response.status_code == 404
    assert not board.outputs.exists()


def test_your_outputs_cannot_be_added_to_another_teams_board(client):
    board = Board.objects.create(team=make_team("Elsewhere"), name="Theirs")
    (mine,) = finished()

    assert select(client, "add", [mine], board=board.pk).status_code == 404
    assert not board.outputs.exists()


def test_a_board_refuses_another_teams_output_whoever_asks(team):
    board = Board.objects.create(team=team, name="Lighthouses")
    (theirs,) = finished(team=make_team("Elsewhere"))

    with pytest.raises(ValueError):
        board.add([theirs])


def test_a_viewer_may_download_a_selection_but_change_nothing(team):
    board = Board.objects.create(team=team, name="Lighthouses")
    outputs = finished(images=2)
    viewer = signed_in(team, Role.VIEWER)

    for action, fields in [
        ("add", {"board": board.pk}),
        ("remove", {"board": board.pk}),
        ("star", {}),
        ("unstar", {}),
        ("delete", {}),
        ("share", {}),
    ]:
        assert select(viewer, action, outputs, **fields).status_code == 403, action
    download = select(viewer, "download", outputs)

    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert Output.objects.filter(starred=True).count() == 0
    assert Output.objects.count() == 2
    assert not board.outputs.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "star"}, "Select at least one image first."),
        ({"outputs": "x", "action": "star"}, "is not a valid value"),
        ({"outputs": "OUT"}, "Choose what to do with the selected images."),
        ({"outputs": "OUT", "action": "explode"}, "There is no action called explode."),
        ({"outputs": "OUT", "action": "add"}, "Choose a board, or name a new one, to add to."),
        (
            {"outputs": "OUT", "action": "add", "board": "BOARD", "new_board": "More"},
            "Choose a board or name a new one, not both.",
        ),
        (
            {"outputs": "OUT", "action": "add", "new_board": "lighthouses"},
            "already has a board called “lighthouses”: choose it from the list.",
        ),
        ({"outputs": "OUT", "action": "remove"}, "Choose the board to remove the images from."),
        ({"outputs": "OUT", "action": "share", "expires_in": "5"}, "never, 1, 7 or 30 days"),
    ],
)
def test_bad_selection_input_goes_back_with_a_message(client, team, fields, message):
    board = Board.objects.create(team=team, name="Lighthouses")
    (output,) = finished()
    data = {
        name: {"OUT": output.pk, "BOARD": board.pk}.get(value, value)
        for name, value in fields.items()
    }

    response = client.post("/outputs/selection", {**data, "next": f"/boards/{board.pk}/"})

    assert response.status_code == 302
    assert response["Location"] == f"/boards/{board.pk}/"
    assert any(message in text for text in messages_of(response)), messages_of(response)
    assert not board.outputs.exists()
    assert Board.objects.count() == 1


@pytest.mark.parametrize(
    "next_url", ["https://evil.example/", "//evil.example/", "javascript:alert(1)", ""]
)
def test_the_selection_goes_back_only_to_pages_of_this_site(client, next_url):
    (output,) = finished()

    response = select(client, "star", [output], next=next_url)

    assert response["Location"] == "/gallery/"


# --- Stars -----------------------------------------------------------------------------------


def test_selected_images_are_starred_and_unstarred_in_bulk(client):
    outputs = finished(images=3)

    select(client, "star", outputs[:2])
    assert set(Output.objects.filter(starred=True)) == set(outputs[:2])

    select(client, "unstar", outputs)
    assert not Output.objects.filter(starred=True).exists()


def test_a_star_toggle_answers_htmx_with_its_button_and_others_with_a_redirect(client):
    (output,) = finished()

    starred = client.post(f"/outputs/{output.pk}/star", {"starred": "1"}, headers=HTMX)
    output.refresh_from_db()

    assert output.starred
    html = starred.content.decode()
    assert 'aria-pressed="true"' in html
    assert 'name="starred" value="0"' in html
    assert html.strip().startswith('<form class="star-form"')

    unstarred = client.post(f"/outputs/{output.pk}/star", {"starred": "0", "next": "/boards/"})
    output.refresh_from_db()

    assert not output.starred
    assert unstarred.status_code == 302
    assert unstarred["Location"] == "/boards/"


def test_a_star_without_a_state_changes_nothing(client):
    (output,) = finished()

    htmx = client.post(f"/outputs/{output.pk}/star", {"starred": "maybe"}, headers=HTMX)
    plain = client.post(f"/outputs/{output.pk}/star", {})

    assert htmx.status_code == 400
    assert plain.status_code == 302
    assert plain["Location"] == output.prediction.get_absolute_url()
    output.refresh_from_db()
    assert not output.starred


# --- Deleting --------------------------------------------------------------------------------


def files_exist(output: Output) -> list[bool]:
    return [default_storage.exists(name) for name in output.stored_names()]


def test_deleting_an_output_deletes_its_stored_files(client, django_capture_on_commit_callbacks):
    kept, deleted = finished(images=2)
    assert files_exist(deleted) == [True, True, True]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/outputs/{deleted.pk}/delete")

    assert response.status_code == 302
    assert response["Location"] == deleted.prediction.get_absolute_url()
    assert not Output.objects.filter(pk=deleted.pk).exists()
    assert files_exist(deleted) == [False, False, False]
    assert files_exist(kept) == [True, True, True]


def test_a_file_another_output_shares_is_kept_when_one_is_deleted(
    client, django_capture_on_commit_callbacks
):
    png = noise_png(20)
    first = make_output(make_prediction("a"), image=png)
    second = make_output(make_prediction("b"), image=png)
    assert first.sha256 == second.sha256

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/outputs/{first.pk}/delete")

    assert files_exist(second) == [True, True, True]

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/outputs/{second.pk}/delete")

    assert files_exist(second) == [False, False, False]


def test_selected_images_are_deleted_with_their_files(client, django_capture_on_commit_callbacks):
    outputs = finished(images=3)

    with django_capture_on_commit_callbacks(execute=True):
        response = select(client, "delete", outputs[:2])

    assert messages_of(response) == ["Deleted 2 images."]
    assert list(Output.objects.all()) == outputs[2:]
    assert [files_exist(o) for o in outputs] == [[False] * 3, [False] * 3, [True] * 3]


def test_deleting_a_prediction_deletes_its_outputs_and_their_files(
    client, django_capture_on_commit_callbacks
):
    outputs = finished(images=2)
    prediction = outputs[0].prediction

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/predictions/{prediction.pk}/delete")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert not Prediction.objects.filter(pk=prediction.pk).exists()
    assert not Output.objects.exists()
    assert [files_exist(o) for o in outputs] == [[False] * 3, [False] * 3]


def test_a_running_prediction_is_not_deleted(client):
    prediction = make_prediction(status="processing", provider_id="abc")

    response = client.post(f"/predictions/{prediction.pk}/delete")

    assert response["Location"] == prediction.get_absolute_url()
    assert messages_of(response) == ["This prediction is still running: cancel it first."]
    assert Prediction.objects.filter(pk=prediction.pk).exists()


def test_a_viewer_cannot_delete_an_output_or_a_prediction(team):
    (output,) = finished()
    viewer = signed_in(team, Role.VIEWER)

    assert viewer.post(f"/outputs/{output.pk}/delete").status_code == 403
    assert viewer.post(f"/predictions/{output.prediction_id}/delete").status_code == 403
    assert Output.objects.filter(pk=output.pk).exists()


# --- Zips ------------------------------------------------------------------------------------


def unzip(response) -> dict[str, bytes]:
    assert response.streaming
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_board_downloads_as_a_zip_of_its_archived_copies(client, team):
    board = Board.objects.create(team=team, name="Lighthouses at dusk!")
    outputs = finished("a lighthouse at dusk", images=2)
    pending = Output.objects.create(
        team=team, prediction=outputs[0].prediction, index=5, source_url="https://x.test/a.png"
    )
    board.add([*outputs, pending])

    response = client.get(f"/boards/{board.pk}/download")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="lighthouses-at-dusk.zip"'
    files = unzip(response)
    assert files == {
        "a-lighthouse-at-dusk-1.png": default_storage.open(outputs[0].stored_name()).read(),
        "a-lighthouse-at-dusk-2.png": default_storage.open(outputs[1].stored_name()).read(),
    }
    assert pending.state == ArchiveState.PENDING


def test_a_selection_downloads_as_a_zip_with_unique_entry_names(client):
    first = finished("twins")[0]
    second = finished("twins")[0]
    assert first.file_name() == second.file_name()

    response = select(client, "download", [first, second])

    assert response["Content-Disposition"] == 'attachment; filename="darkroom-selection.zip"'
    assert sorted(unzip(response)) == ["twins-1 (2).png", "twins-1.png"]


def test_nothing_saved_to_download_goes_back_with_a_message_rather_than_an_empty_zip(client, team):
    prediction = make_prediction(status="succeeded")
    pending = Output.objects.create(
        team=team, prediction=prediction, index=0, source_url="https://x.test/a.png"
    )
    board = Board.objects.create(team=team, name="Lighthouses")
    board.add([pending])

    selection = select(client, "download", [pending], next="/boards/")
    download = client.get(f"/boards/{board.pk}/download")

    assert selection["Location"] == "/boards/"
    assert messages_of(selection) == ["None of the selected images has a saved copy yet."]
    assert download["Location"] == f"/boards/{board.pk}/"
    assert "This board has no saved images to download yet." in messages_of(download)


def test_entry_names_that_would_repeat_get_a_number():
    class Named:
        def __init__(self, name):
            self.name = name

        def file_name(self, hide_prompt=False):
            return self.name

    names = entry_names(
        [Named("a-1.png"), Named("a-1.png"), Named("a-1 (2).png"), Named("a-1.png")]
    )

    assert names == ["a-1.png", "a-1 (2).png", "a-1 (2) (2).png", "a-1 (3).png"]


def test_a_zip_is_written_in_small_pieces_so_memory_stays_bounded():
    pngs = [noise_png(300) for _ in range(4)]
    outputs = [make_output(make_prediction(f"noise {n}"), image=png) for n, png in enumerate(pngs)]
    assert sum(len(png) for png in pngs) > 1_000_000

    chunks = list(zip_chunks(outputs))

    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE + 1024
    assert len([chunk for chunk in chunks if chunk]) > 16
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert [archive.read(info) for info in archive.infolist()] == pngs
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())


def test_a_copy_missing_from_storage_is_left_out_of_the_zip(client, team):
    board = Board.objects.create(team=team, name="Lighthouses")
    outputs = finished("gone", images=2)
    board.add(outputs)
    default_storage.delete(outputs[0].stored_name())

    assert list(unzip(client.get(f"/boards/{board.pk}/download"))) == ["gone-2.png"]


@pytest.mark.parametrize("field", ["outputs", "board"])
def test_an_id_too_large_for_the_database_is_an_unknown_one_not_an_error(client, team, field):
    output = make_output(make_prediction(team=team, status="succeeded"))
    data = {"outputs": [output.pk], "action": "add", "board": "", field: str(2**63)}

    response = client.post("/outputs/selection", data)

    assert response.status_code == 404
