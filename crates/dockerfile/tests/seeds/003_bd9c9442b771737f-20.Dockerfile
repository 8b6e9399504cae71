FROM alpine:latest

# Только необходимое для runtime
RUN apk --no-cache add ca-certificates

COPY --from=builder /app/main .

CMD ["./main"]
