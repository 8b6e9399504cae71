# ========================================
# Stage 1: Build
# ========================================
FROM python:3.11-slim AS builder

WORKDIR /app

# Установить build зависимости
RUN apt-get update && \
    apt-get install -y --no-install-recommends gcc && \
    rm -rf /var/lib/apt/lists/*

# Установить Python зависимости
COPY requirements.txt .
RUN pip install --user --no-cache-dir -r requirements.txt

# ========================================
# Stage 2: Runtime
# ========================================
FROM python:3.11-slim

WORKDIR /app

# Копировать установленные пакеты из builder
COPY --from=builder /root/.local /root/.local

# Добавить путь к пакетам
ENV PATH=/root/.local/bin:$PATH

# Копировать приложение
COPY . .

RUN useradd -m -u 1000 appuser && chown -R appuser:appuser /app
USER appuser

EXPOSE 8000

CMD ["python", "app.py"]
