# One image for every Darkroom process; docker-compose.yml picks the command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The dependencies get a layer of their own, rebuilt only when pyproject.toml changes. The project
# declares no importable packages: the code runs from /app.
COPY pyproject.toml ./
RUN pip install . && rm -rf build *.egg-info

RUN useradd --system --no-create-home --home-dir /app darkroom
COPY . .
# Code stays root-owned and read-only to the app; only var/ (static files, beat schedule, archived
# outputs) is its.
RUN mkdir -p var/media && chown -R darkroom:darkroom var
USER darkroom

# With production settings, so the collected files match what the running app expects.
# Throwaway secrets: collectstatic reads settings, which require them in production.
RUN DARKROOM_PRODUCTION=true SECRET_KEY=collectstatic-only \
    DARKROOM_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --no-input

EXPOSE 8000
CMD ["gunicorn", "dashboard.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "16", "--access-logfile", "-", "--logger-class", "dashboard.gunicorn.Logger"]
