# Хорошо
FROM golang:1.21-alpine AS builder
# ...

FROM alpine:latest
COPY --from=builder /app/main .  # Понятно
