# ========================================
# Stage 1: Build
# ========================================
FROM golang:1.21-alpine AS builder

WORKDIR /app

COPY go.mod go.sum ./
RUN go mod download

COPY . .

RUN CGO_ENABLED=0 GOOS=linux go build -o main .

# ========================================
# Stage 2: Runtime
# ========================================
FROM alpine:latest

WORKDIR /root/

# Копируем ТОЛЬКО бинарник из предыдущего stage
COPY --from=builder /app/main .

EXPOSE 8080

CMD ["./main"]
