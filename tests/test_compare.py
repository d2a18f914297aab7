"""Compare: two to four predictions of the team side by side at `/compare/?p=12&p=15`, their
images at one size and what was asked of each, the differences marked; inputs the same in all
listed once. Bad input is a 400 that says what is wrong; another team's prediction, a 404."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from outputs.models import ArchiveState, Output
from predictions.forms import marked_words
from predictions.models import Prediction

from .conftest import make_output, make_prediction, make_team, make_user

pytestmark = pytest.mark.django_db


def finished(prompt: str, images: int = 1, **input) -> Prediction:
    started = timezone.now() - timedelta(seconds=10)
    prediction = make_prediction(
        status="succeeded",
        input={"prompt": prompt, **input},
        started_at=started,
        completed_at=started + timedelta(seconds=2.5),
    )
    for _ in range(images):
        make_output(prediction)
    return prediction


def compare(client, *predictions, status: int = 200) -> str:
    query = "&".join(f"p={p.pk}" for p in predictions)
    response = client.get(f"/compare/?{query}")
    assert response.status_code == status, response.content.decode()[:500]
    return response.content.decode()


def row(html: str, label: str) -> str:
    """The table row whose heading is `label`, as HTML."""
    for match in re.finditer(r"<tr[^>]*>.*?</tr>", html, re.DOTALL):
        heading = re.search(r'<th scope="row">(.*?)</th>', match.group(0), re.DOTALL)
        if heading and re.sub(r"<[^>]+>", "", heading.group(1)).split(" ≠")[0] == label:
            return match.group(0)
    raise AssertionError(f"no row {label!r}")


def cells(row_html: str) -> list[str]:
    return [unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.DOTALL)]


def marks(html: str) -> list[str]:
    return re.findall(r"<mark>(.*?)</mark>", html)


def test_two_predictions_show_side_by_side_with_the_differing_words_of_the_prompt_marked(client):
    snow = finished("a red fox in fresh snow", aspect_ratio="1:1", seed=7)
    rain = finished("a red fox in the rain", aspect_ratio="1:1", seed=7)

    html = compare(client, snow, rain)

    prompt = row(html, "prompt")
    assert 'class="differs"' in prompt
    assert "≠ differs" in prompt
    snow_cell, rain_cell = cells(prompt)
    assert marks(snow_cell) == ["fresh", "snow"]
    assert marks(rain_cell) == ["the", "rain"]
    assert "a red fox in" in re.sub(r"<[^>]+>", "", snow_cell)
    # The same in both: plainly, once, below; not a row of the table.
    assert 'class="differs"' not in row(html, "Seed")
    with pytest.raises(AssertionError):
        row(html, "aspect_ratio")
    same = re.search(r'<details class="compare-same">.*?</details>', html, re.DOTALL).group(0)
    assert "<code>aspect_ratio</code></dt><dd" in same and "1:1" in same
    assert "Provider" in same


def test_the_columns_follow_the_order_of_the_address_and_link_each_prediction(client):
    first, second = finished("first"), finished("second")

    html = compare(client, second, first)

    heads = re.findall(r'<th scope="col" class="compare-head">\s*<a href="([^"]+)"', html)
    assert heads == [second.get_absolute_url(), first.get_absolute_url()]
    assert cells(row(html, "prompt"))[0].endswith("second</mark></span>")


def test_model_seed_status_run_time_and_cost_show_for_each(client):
    flux = finished("a heron", seed=42)
    sdxl = make_prediction(
        "a heron",
        model="stability-ai/sdxl",
        status="failed",
        error="CUDA out of memory.",
        logs="Using seed: 31337\n",
    )

    html = compare(client, flux, sdxl)

    model = row(html, "Model")
    assert 'class="differs"' in model
    assert marks(model) == ["black-forest-labs/flux-schnell", "stability-ai/sdxl"]
    flux_seed, sdxl_seed = cells(row(html, "Seed"))
    assert "42" in flux_seed and "random" not in flux_seed
    assert "31337" in sdxl_seed and "(drawn at random)" in sdxl_seed
    flux_status, sdxl_status = cells(row(html, "Status"))
    assert "Succeeded" in flux_status
    assert "Failed" in sdxl_status and "CUDA out of memory." in sdxl_status
    assert [c.strip() for c in cells(row(html, "Run time"))] == ["2.5 s", "—"]
    assert len(re.findall(r'<span class="cost cost-', row(html, "Cost"))) == 2
    # Image 1 of the one that failed: a placeholder of the same size, not a hole.
    flux_image, sdxl_image = cells(row(html, "Image 1"))
    assert re.search(r'<img src="/outputs/\d+/thumb', flux_image)
    assert "No image" in sdxl_image


def test_an_input_only_one_of_them_sent_differs_and_says_not_set(client):
    plain = finished("a quiet harbour")
    wide = finished("a quiet harbour", aspect_ratio="16:9")

    plain_cell, wide_cell = cells(row(compare(client, plain, wide), "aspect_ratio"))

    assert '<mark class="compare-unset">not set</mark>' in plain_cell
    assert marks(wide_cell) == ["16:9"]


def test_images_line_up_by_index_and_each_has_a_frame_of_one_size(client):
    two = finished("two of them", images=2)
    one = finished("only one", images=1)
    Output.objects.create(
        team_id=one.team_id,
        prediction=one,
        index=1,
        source_url="https://replicate.delivery/gone.png",
        state=ArchiveState.EXPIRED,
        next_attempt_at=None,
    )

    html = compare(client, two, one)

    assert cells(row(html, "Image 1"))[1].count('class="compare-frame"') == 1
    second_of_two, second_of_one = cells(row(html, "Image 2"))
    assert f'alt="Prediction {two.pk}, image 2"' in second_of_two
    assert "Expired at the provider" in second_of_one


def test_with_more_than_two_each_column_links_to_the_comparison_without_it(client):
    a, b, c = finished("a"), finished("b"), finished("c")

    html = compare(client, a, b, c)

    assert f'href="?p={b.pk}&amp;p={c.pk}"' in html
    assert f'href="?p={a.pk}&amp;p={b.pk}"' in html
    assert "compare-remove" not in compare(client, a, b)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Choose the predictions to compare."),
        ("p=1", "Compare takes two to four predictions, not 1."),
        ("p=1&p=2&p=3&p=4&p=5", "Compare takes two to four predictions, not 5."),
        ("p=1&p=fox", "“fox” is not a prediction number."),
        ("p=1&p=-2", "“-2” is not a prediction number."),
        ("p=1&p=0", "“0” is not a prediction number."),
        ("p=1&p=2.5", "“2.5” is not a prediction number."),
        ("p=1&p=99999999999999999999", "is not a prediction number."),
        ("p=1&p=１２", "“１２” is not a prediction number."),
        ("p=3&p=4&p=3", "Prediction 3 is named twice: compare different predictions."),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_wrong(client, query, message):
    response = client.get(f"/compare/?{query}")

    assert response.status_code == 400
    html = unescape(response.content.decode())
    assert '<p class="error" role="alert">' in html
    assert message in html
    assert "Go to the gallery" in html


def test_another_teams_or_an_unknown_prediction_is_a_404_that_reveals_nothing(client):
    ours = finished("our own lighthouse")
    theirs = make_prediction("their secret plan", team=make_team("Elsewhere"), status="succeeded")

    for other in (theirs.pk, theirs.pk + 1000):
        response = client.get(f"/compare/?p={ours.pk}&p={other}")
        assert response.status_code == 404
        assert "their secret plan" not in response.content.decode()
        assert "our own lighthouse" not in response.content.decode()


def test_a_viewer_may_compare_and_a_stranger_is_sent_to_sign_in(client, team):
    a, b = finished("a"), finished("b")
    viewer = make_user("vic", team, Role.VIEWER)
    client.force_login(viewer)
    assert compare(client, a, b)

    client.logout()
    response = client.get(f"/compare/?p={a.pk}&p={b.pk}")
    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/")


def test_the_page_costs_the_same_queries_whatever_its_number_of_images(client):
    def queries_for(*predictions) -> int:
        with CaptureQueriesContext(connection) as queries:
            compare(client, *predictions)
        return len(queries.captured_queries)

    few = queries_for(finished("one", images=1), finished("two", images=1))
    many = queries_for(*(finished(f"many {n}", images=4) for n in range(4)))

    assert many == few
    assert few <= 12


def test_words_are_marked_unless_every_other_text_has_them_in_the_same_place():
    texts = ["a fox in snow", "a fox in snow", "a wolf in snow", ""]

    marked = [[piece for piece, is_marked in parts if is_marked] for parts in marked_words(texts)]

    # The empty text has none of them: every word of the others is marked.
    assert marked == [["a", "fox", "in", "snow"]] * 2 + [["a", "wolf", "in", "snow"], []]
    assert (
        marked_words(["same words", "same words"])
        == [[("same", False), (" ", False), ("words", False)]] * 2
    )
    first, second = marked_words(["cat sat", "sat cat"])
    assert sum(is_marked for _, is_marked in first) == 1  # one word of each can line up
    assert "".join(piece for piece, _ in second) == "sat cat"


def test_the_gallery_toolbar_offers_compare_and_a_predictions_own_page_does_not(client):
    prediction = finished("on its own page", images=2)

    gallery = client.get("/gallery/").content.decode()
    page = client.get(prediction.get_absolute_url()).content.decode()

    assert 'data-compare="/compare/"' in gallery
    assert "data-compare=" not in page
