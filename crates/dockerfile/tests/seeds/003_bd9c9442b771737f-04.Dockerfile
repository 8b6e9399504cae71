COPY --from=builder /app/main .
