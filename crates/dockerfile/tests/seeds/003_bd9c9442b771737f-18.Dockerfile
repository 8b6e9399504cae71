# Плохо
FROM golang:1.21-alpine
# ...

FROM alpine:latest
COPY --from=0 /app/main .  # Неясно, откуда копируем
