"""What every request goes through before a view reads it."""

from urllib.parse import unquote

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

NUL_MESSAGE = "A URL cannot hold a null character (%00)."


class NullCharacterMiddleware:
    """Answers 400 to a URL whose path or query holds a NUL. No URL of Darkroom's takes one,
    and PostgreSQL cannot even compare one (an invite's or share link's token, a search): left
    to the views, it was a server error. The API answers in its own JSON."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            if request.path.startswith("/api/"):
                body = {"title": "Bad Request", "detail": NUL_MESSAGE, "status": 400}
                return JsonResponse(body, status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
