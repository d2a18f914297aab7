"""The log viewer: tqdm bars collapse into one progress element, ANSI codes go, and the viewer
fetches only what it has not been sent, from a cursor, until the prediction has finished."""

import re

import pytest

from accounts.models import Role
from predictions.logs import Line, Progress, parse, printed_seed, read_log

from .conftest import make_prediction, make_team, make_user

# The log of the CometAPI query example (shared/seeds), as Replicate reports tqdm: a line each.
SEED_LOG = (
    "Using seed: 60392\n"
    "running quantized prediction\n"
    "Using seed: 60392\n"
    "  0%|          | 0/4 [00:00<?, ?it/s]\n"
    " 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\n"
    "100%|██████████| 4/4 [00:00<00:00, 13.76it/s]\n"
    "100%|██████████| 4/4 [00:00<00:00, 14.34it/s]\n"
    "Total safe images: 1 out of 1\n"
)
HTMX = {"HX-Request": "true"}


def bar(line: str) -> Progress:
    [item] = parse(line + "\n").items
    assert isinstance(item, Progress)
    return item


# --- Parsing ---------------------------------------------------------------------------------


def test_the_seed_log_shows_its_lines_and_one_bar_in_its_latest_state():
    chunk = read_log(SEED_LOG)

    assert chunk.items == [
        Line("Using seed: 60392"),
        Line("running quantized prediction"),
        Line("Using seed: 60392"),
        Progress(
            description="",
            percent=100,
            count="4",
            total="4",
            elapsed="00:00",
            remaining="00:00",
            rate="14.34it/s",
        ),
        Line("Total safe images: 1 out of 1"),
    ]
    assert chunk.partial is None
    assert chunk.cursor == len(SEED_LOG)


def test_carriage_return_updates_within_a_line_show_the_latest_state():
    log = (
        "Loading weights\n"
        "\r  0%|          | 0/20 [00:00<?, ?it/s]"
        "\r 45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]"
        "\r100%|██████████| 20/20 [00:02<00:00,  8.91it/s]\n"
        "done\n"
    )

    items = parse(log).items

    assert [type(item) for item in items] == [Line, Progress, Line]
    assert (items[1].percent, items[1].count, items[1].total) == (100, "20", "20")


def test_a_bar_still_being_written_is_the_partial_line():
    chunk = parse(
        "  0%|          | 0/20 [00:00<?, ?it/s]\r 45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]"
    )

    assert chunk.items == []
    assert chunk.partial == Progress("", 45, "9", "20", "00:01", "00:01", "8.73it/s")


def test_a_bar_reports_percent_count_rate_elapsed_eta_and_description():
    progress = bar("Denoising:  45%|████▌     | 9/20 [00:01<00:01,  8.73it/s, loss=0.12]")

    assert progress == Progress(
        description="Denoising",
        percent=45,
        count="9",
        total="20",
        elapsed="00:01",
        remaining="00:01",
        rate="8.73it/s",
        postfix="loss=0.12",
    )
    assert bar("  3%|▎         | 1/30 [00:02<01:10,  2.41s/it]").rate == "2.41s/it"
    assert bar("  0%|          | 0/4 [00:00<?, ?it/s]").rate is None


def test_a_bar_without_a_total_is_recognised():
    progress = bar("Downloading: 120MB [00:03, 40.0MB/s]")

    assert (progress.description, progress.percent, progress.count) == (
        "Downloading",
        None,
        "120MB",
    )
    assert progress.rate == "40.0MB/s"


def test_a_second_bar_after_a_finished_one_is_a_new_bar():
    log = (
        "  0%|          | 0/4 [00:00<?, ?it/s]\n"
        "100%|██████████| 4/4 [00:00<00:00, 13.76it/s]\n"
        "  0%|          | 0/4 [00:00<?, ?it/s]\n"
        " 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\n"
        "Upscaling:  50%|█████     | 1/2 [00:00<00:00, 3.00it/s]\n"
    )

    assert [item.percent for item in parse(log).items] == [100, 50, 50]


def test_lines_printed_while_a_bar_runs_leave_it_in_place():
    log = (
        "  0%|          | 0/4 [00:00<?, ?it/s]\n"
        " 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\n"
        "Token indices sequence length is longer than the maximum\n"
        "100%|██████████| 4/4 [00:00<00:00, 13.76it/s]\n"
        "100%|██████████| 4/4 [00:00<00:00, 14.34it/s]\n"
        "a finished bar is not updated by a later one\n"
        "100%|██████████| 4/4 [00:00<00:00, 20.00it/s]\n"
    )

    items = parse(log).items

    assert [getattr(item, "rate", None) for item in items] == ["14.34it/s", None, None, "20.00it/s"]


def test_lines_that_only_look_like_progress_pass_through():
    log = "Loaded 100% | ok\n[INFO] 10/20 files copied\nratio 3/4 [00:01]\n"

    assert parse(log).items == [
        Line("Loaded 100% | ok"),
        Line("[INFO] 10/20 files copied"),
        Line("ratio 3/4 [00:01]"),
    ]


def test_ansi_escape_codes_are_stripped():
    log = (
        "\x1b]0;a window title\x07\x1b[1;32mINFO\x1b[0m ready\n"
        "\x1b[A\x1b[2K 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\x1b[0m\n"
        "bell\x07 and backspace\x08 gone\ttab kept\n"
    )

    items = parse(log).items

    assert items[0] == Line("INFO ready")
    assert items[1].percent == 50
    assert items[2] == Line("bell and backspace gone\ttab kept")


# Backtracking over a line like this one took minutes: the timeout is the assertion.
@pytest.mark.timeout(20)
def test_a_huge_line_full_of_percent_bars_parses_quickly():
    log = "1%|1%|" * 100_000 + " 1/2 [00:01<00:01, 1.00it/s]\n"

    items = parse(log).items

    assert items == [Line(log.rstrip("\n"))]


def test_the_seed_a_model_printed_is_read_from_its_log():
    assert printed_seed(SEED_LOG) == 60392
    assert printed_seed("loading\nusing seed 7\n") == 7
    assert printed_seed("no seed here, 12345\n") is None


def client_after(prefixes: list[str]) -> tuple[list, object]:
    """What a browser shows after a first load of prefixes[0] and an update per later prefix,
    applied as the templates do: the bar updates #log-bar-current in place, items append, the
    partial line is replaced, and the cursor and bar line are sent back."""
    first = read_log(prefixes[0])
    shown = list(first.items)
    current = next((i for i, item in enumerate(shown) if item is first.current), None)
    partial, cursor, bar_line = first.partial, first.cursor, first.bar_line
    for text in prefixes[1:]:
        if len(text) == cursor:
            continue  # the view answers 204
        chunk = read_log(text, cursor, bar_line)
        if chunk.bar is not None:
            assert current is not None, f"no #log-bar-current to update at cursor {cursor}"
            shown[current] = chunk.bar
        shown.extend(chunk.items)
        if chunk.current is not None and chunk.current is not chunk.bar:
            current = next(i for i, item in enumerate(shown) if item is chunk.current)
        partial, cursor, bar_line = chunk.partial, chunk.cursor, chunk.bar_line
    return shown, partial


@pytest.mark.parametrize(
    "log",
    [
        SEED_LOG,
        "Loading\r\n\x1b[32m  0%|          | 0/3 [00:00<?, ?it/s]\r 33%|███▎      | 1/3 "
        "[00:00<00:01, 2.00it/s]\r100%|██████████| 3/3 [00:01<00:00, 2.50it/s]\x1b[0m\ndone",
        "  0%|          | 0/2 [00:00<?, ?it/s]\n 50%|█████     | 1/2 [00:00<00:00, 2.00it/s]\n"
        "a line between\n 50%|█████     | 1/2 [00:00<00:00, 2.00it/s]\n\n\n"
        "100%|██████████| 2/2 [00:01<00:00, 2.00it/s]\nmore\n100%|██████████| 2/2 "
        "[00:00<00:00, 9.00it/s]\n  0%|          | 0/2 [00:00<?, ?it/s]\rok\n",
    ],
)
def test_fetching_from_any_cursor_shows_what_one_full_load_shows(log):
    for step in (1, 3, 7):
        prefixes = [log[:end] for end in range(0, len(log) + 1, step)] + [log]

        shown, partial = client_after(prefixes)

        final = read_log(log)
        assert (shown, partial) == (final.items, final.partial), f"step {step}"


@pytest.mark.timeout(20)  # a few hundredths of a second on an idle machine
def test_a_one_megabyte_log_parses_into_its_lines_and_latest_bars():
    bars = "".join(
        f"{p:3d}%|{'█' * (p // 10):<10}| {p}/100 [00:01<00:01,  8.73it/s]\n" for p in range(101)
    )
    log = ("\x1b[32mstep\x1b[0m loading a shard of weights from disk\n" + bars) * 250
    log = log[: 2**20]

    chunk = parse(log)

    assert len(log) == 2**20
    assert 250 <= len(chunk.items) <= 502


def test_a_first_load_of_a_long_log_renders_only_its_tail():
    log = "".join(f"line {n}\n" for n in range(100_000))

    chunk = read_log(log, tail=1000)

    assert chunk.skipped == chunk.start > len(log) - 1000
    assert log[chunk.start - 1] == "\n"
    assert chunk.items[-1] == Line("line 99999")


# --- The view -------------------------------------------------------------------------------


def logs_url(prediction, cursor=None, bar=None) -> str:
    url = f"/predictions/{prediction.pk}/logs"
    if cursor is not None:
        url += f"?cursor={cursor}"
    return url if bar is None else f"{url}&bar={bar}"


def test_an_update_returns_only_the_text_after_the_cursor(client):
    prediction = make_prediction(status="processing", logs="first line\nsecond line\n")

    response = client.get(logs_url(prediction, len("first line\n")), headers=HTMX)

    body = response.content.decode()
    assert response.status_code == 200
    assert '<div class="log-line">second line</div>' in body
    assert "first line" not in body
    assert f'name="cursor" value="{len(prediction.logs)}"' in body
    assert 'id="log-cursor" hx-swap-oob="innerHTML"' in body
    assert "no-cache" in response["Cache-Control"]
    # Still running: the poller is left alone and keeps polling.
    assert "log-poller" not in body


def test_a_line_still_being_written_is_sent_again_until_it_is_finished(client):
    prediction = make_prediction(status="processing", logs="ready\nhalf a li")
    client.get(logs_url(prediction, 0), headers=HTMX)
    prediction.apply_remote({"id": "abc", "status": "processing", "logs": "ready\nhalf a line\n"})

    body = client.get(logs_url(prediction, len("ready\nhalf a li")), headers=HTMX).content.decode()

    assert "ready" not in body
    assert '<div class="log-line">half a line</div>' in body
    assert '<div id="log-partial" class="log-lines" hx-swap-oob="true"></div>' in body


def test_nothing_new_while_running_is_204_before_the_log_is_read(client, django_assert_num_queries):
    prediction = make_prediction(status="processing", logs="x" * 100_000)

    # User and membership (the session is cached), then the status and the log's length.
    with django_assert_num_queries(3):
        response = client.get(logs_url(prediction, 100_000), headers=HTMX)

    assert response.status_code == 204
    assert response.content == b""


def test_a_continued_bar_is_updated_in_place_not_appended(client):
    logs = "  0%|          | 0/4 [00:00<?, ?it/s]\n"
    prediction = make_prediction(status="processing", logs=logs)
    page = client.get(prediction.get_absolute_url()).content.decode()
    prediction.apply_remote(
        {
            "id": "abc",
            "status": "processing",
            "logs": logs + " 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\n",
        }
    )

    body = client.get(logs_url(prediction, len(logs), bar=0), headers=HTMX).content.decode()

    assert '<input type="hidden" name="bar" value="0">' in page
    assert body.count("<progress") == 1
    assert 'id="log-bar-current" hx-swap-oob="outerHTML:#log-bar-current"' in body
    assert 'value="50"' in body
    assert "ETA 00:00" in body


def test_a_bar_updated_after_other_lines_is_updated_where_it_started(client):
    logs = " 50%|█████     | 2/4 [00:00<00:00, 18.90it/s]\n"
    more = "a warning\n 75%|███████▌  | 3/4 [00:00<00:00, 18.00it/s]\n"
    prediction = make_prediction(status="processing", logs=logs + more)

    body = client.get(logs_url(prediction, len(logs), bar=0), headers=HTMX).content.decode()

    assert body.count("<progress") == 1
    assert 'id="log-bar-current" hx-swap-oob="outerHTML:#log-bar-current"' in body
    assert 'value="75"' in body
    assert '<div class="log-line">a warning</div>' in body
    assert f'name="bar" value="{len(logs) + len("a warning") + 1}"' in body


def test_a_log_that_shrank_is_rendered_again_whole(client):
    prediction = make_prediction(status="succeeded", logs="", data_removed=True)

    response = client.get(logs_url(prediction, 500), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#log-viewer"
    assert response["HX-Reswap"] == "outerHTML"
    body = response.content.decode()
    assert 'id="log-viewer"' in body
    assert "No logs yet." in body
    assert "hx-trigger" not in body


def test_a_viewer_far_behind_gets_the_tail_instead_of_everything(client):
    logs = "".join(f"line {n}\n" for n in range(50_000))
    prediction = make_prediction(status="processing", logs=logs)

    response = client.get(logs_url(prediction, 10), headers=HTMX)

    assert response["HX-Retarget"] == "#log-viewer"
    body = response.content.decode()
    assert "line 49999" in body
    assert ">line 11<" not in body
    assert "of the log are not shown here" in body


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        ("-1", "The cursor cannot be negative."),
        ("ten", "The cursor must be a whole number of characters."),
        ("1.5", "The cursor must be a whole number of characters."),
        ("3&bar=x", "The bar must be a whole number of characters."),
    ],
)
def test_a_bad_cursor_is_400_with_a_clear_message(client, cursor, message):
    prediction = make_prediction(status="processing", logs="hello\n")

    response = client.get(f"{logs_url(prediction)}?cursor={cursor}", headers=HTMX)

    assert response.status_code == 400
    assert response.content.decode() == message


def test_another_teams_log_is_404(client):
    prediction = make_prediction(team=make_team("Elsewhere"), status="processing", logs="secret\n")

    assert client.get(logs_url(prediction, 0), headers=HTMX).status_code == 404
    assert client.get(logs_url(prediction)).status_code == 404


def test_a_viewer_may_read_the_log(client):
    viewer = make_user("vic", make_team(), Role.VIEWER)
    client.force_login(viewer)
    prediction = make_prediction(status="processing", logs="hello\n")

    assert client.get(logs_url(prediction, 0), headers=HTMX).status_code == 200


def test_polling_stops_once_finished_and_the_whole_log_was_sent(client):
    prediction = make_prediction(status="succeeded", logs=SEED_LOG)

    response = client.get(logs_url(prediction, len(SEED_LOG)), headers=HTMX)

    body = response.content.decode()
    assert response.status_code == 200
    assert '<div id="log-poller" hx-swap-oob="true"></div>' in body
    assert "hx-trigger" not in body


def test_the_last_lines_and_the_stop_come_together_when_a_prediction_finishes(client):
    prediction = make_prediction(status="succeeded", logs=SEED_LOG)

    body = client.get(logs_url(prediction, SEED_LOG.index("Total")), headers=HTMX).content.decode()

    assert "Total safe images: 1 out of 1" in body
    assert '<div id="log-poller" hx-swap-oob="true"></div>' in body


def test_the_first_text_removes_the_empty_notice(client):
    prediction = make_prediction(status="processing", logs="Using seed: 1\n")

    body = client.get(logs_url(prediction, 0), headers=HTMX).content.decode()

    assert '<p id="log-empty" hx-swap-oob="delete"></p>' in body


def test_the_page_renders_the_log_with_the_markup_of_an_update(client):
    prediction = make_prediction(status="processing", logs=SEED_LOG)

    page = client.get(prediction.get_absolute_url()).content.decode()
    update = client.get(logs_url(prediction, 0), headers=HTMX).content.decode()

    assert '<div class="log-line">Total safe images: 1 out of 1</div>' in page
    assert page.count("<progress") == 1
    assert f'name="cursor" value="{len(SEED_LOG)}"' in page
    assert 'hx-include="#log-cursor" hx-trigger="every 1s"' in page
    for line in ("Using seed: 60392", "running quantized prediction"):
        assert f'<div class="log-line">{line}</div>' in update
    bar_markup = page[page.index('<div class="log-bar"') : page.index("</progress>")]
    assert bar_markup in update.replace(' hx-swap-oob="outerHTML:#log-bar-current"', "")


def test_a_finished_prediction_page_does_not_poll_its_log(client):
    prediction = make_prediction(status="failed", logs=SEED_LOG, error="boom")

    page = client.get(prediction.get_absolute_url()).content.decode()

    assert '<div id="log-poller"></div>' in page
    assert "hx-trigger" not in page


def test_a_one_megabyte_log_page_shows_the_tail_and_links_the_whole_log(client):
    logs = "".join(f"{n:08d} a fairly ordinary line of model output\n" for n in range(2**20 // 48))
    prediction = make_prediction(status="succeeded", logs=logs)

    page = client.get(prediction.get_absolute_url())
    raw = client.get(logs_url(prediction))

    assert len(page.content) < 400_000
    assert "of the log are not shown here" in page.content.decode()
    assert raw["Content-Type"] == "text/plain; charset=utf-8"
    assert raw.content.decode() == logs


def test_without_htmx_the_log_is_plain_text_from_the_cursor(client):
    prediction = make_prediction(status="processing", logs="one\ntwo\n")

    response = client.get(logs_url(prediction, 4))

    assert response.status_code == 200
    assert response.content == b"two\n"
    assert "Vary" in response and "HX-Request" in response["Vary"]


# --- Bars once the prediction has ended -----------------------------------------------------

HALFWAY = " 45%|████▌     | 9/20 [00:01<00:01,  8.73it/s]\n"


def page_of(client, prediction) -> str:
    return client.get(prediction.get_absolute_url()).content.decode()


def bars_of(body: str) -> list[str]:
    return re.findall(r'<div class="log-bar[^"]*".*?</div>', body, re.DOTALL)


def test_the_bar_of_a_running_prediction_shows_its_eta(client):
    prediction = make_prediction(status="processing", logs=HALFWAY)

    [bar] = bars_of(page_of(client, prediction))

    assert "45% · 9/20 · 8.73it/s · 00:01 elapsed · ETA 00:01" in bar
    assert "stopped" not in bar.lower()


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted", "timed_out", "succeeded"])
def test_once_ended_a_bar_short_of_its_total_shows_where_it_stopped_and_no_eta(client, status):
    prediction = make_prediction(status=status, logs=HALFWAY)

    [bar] = bars_of(page_of(client, prediction))

    assert 'class="log-bar log-bar-stopped"' in bar
    assert "Stopped at 45%" in bar
    assert 'aria-label="Progress, stopped"' in bar
    assert "ETA" not in bar


def test_the_update_that_stops_the_poller_takes_the_eta_off_the_latest_bar(client):
    prediction = make_prediction(status="processing", provider_id="abc", logs=HALFWAY)
    page = client.get(prediction.get_absolute_url()).content.decode()
    prediction.apply_remote({"id": "abc", "status": "canceled", "logs": HALFWAY})

    body = client.get(logs_url(prediction, len(HALFWAY), bar=0), headers=HTMX).content.decode()

    assert "ETA 00:01" in page
    [bar] = bars_of(body)
    assert 'id="log-bar-current" hx-swap-oob="outerHTML:#log-bar-current"' in bar
    assert "Stopped at 45%" in bar and "ETA" not in bar
    assert '<div id="log-poller" hx-swap-oob="true"></div>' in body


def test_a_bar_left_behind_by_a_newer_one_stops_while_the_newer_one_runs(client):
    log = HALFWAY + "Upscaling:  50%|█████     | 1/2 [00:00<00:00, 3.00it/s]\n"
    prediction = make_prediction(status="processing", logs=log)

    left, running = bars_of(page_of(client, prediction))

    assert "Stopped at 45%" in left and "ETA" not in left
    assert 'id="log-bar-current"' in running and "ETA 00:00" in running


def test_a_bar_still_being_written_is_live(client):
    prediction = make_prediction(status="processing", logs="Using seed: 1\n" + HALFWAY.strip())

    [bar] = bars_of(page_of(client, prediction))

    assert "ETA 00:01" in bar


def test_a_finished_bar_says_nothing_about_stopping(client):
    done = "100%|██████████| 20/20 [00:02<00:00,  8.91it/s]\n"
    prediction = make_prediction(status="failed", logs=done)

    [bar] = bars_of(page_of(client, prediction))

    assert 'class="log-bar"' in bar
    assert 'value="100"' in bar and "100% · 20/20" in bar
    assert "Stopped" not in bar and "ETA" not in bar


def test_a_bar_without_a_total_moves_only_while_the_prediction_runs(client):
    log = "Downloading: 120MB [00:03, 40.0MB/s]\n"
    running = make_prediction(status="processing", logs=log)
    ended = make_prediction(status="canceled", logs=log)

    [live] = bars_of(page_of(client, running))
    [still] = bars_of(page_of(client, ended))

    # A <progress> without a value is indeterminate: it moves as long as it is shown.
    assert '<progress max="100" aria-label="Downloading"></progress>' in live
    assert "<progress" not in still
    assert "120MB · 40.0MB/s · 00:03 elapsed" in still
    assert "Stopped" not in still
