"""What every request goes through before a view reads it."""

from urllib.parse import unquote

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render

NUL_MESSAGE = "A URL cannot hold a null character (%00)."


def is_api(request: HttpRequest) -> bool:
    """Whether the request is for the API (/api/), whose clients read JSON; the API's pages in
    the team settings are pages like any other."""
    return request.path_info.startswith("/api/")


class NullCharacterMiddleware:
    """Answers 400 to a URL whose path or query holds a NUL. No URL of Darkroom's takes one,
    and PostgreSQL cannot even compare one (an invite's or share link's token, a search): left
    to the views, it was a server error. The API answers in its own JSON."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            if is_api(request):
                body = {"title": "Bad Request", "detail": NUL_MESSAGE, "status": 400}
                return JsonResponse(body, status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class MethodNotAllowedPageMiddleware:
    """A page for a visit to an address that only takes a form (a bookmarked or typed
    `/teams/new`): Django's 405 has no body, which a browser shows as its own error page. The
    API's 405s say so in JSON already; a form sent with the wrong method is left as it is."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or response.content or request.method != "GET":
            return response
        if is_api(request) or request.htmx:
            return response
        page = render(request, "405.html", status=405)
        page["Allow"] = response.get("Allow", "")
        page._has_been_logged = True  # Django logged the 405 already
        return page
