FROM nginx:alpine

# Копировать из официального image
COPY --from=golang:1.21-alpine /usr/local/go/bin/go /usr/local/bin/

# Копировать из конкретного image
COPY --from=myregistry.com/myapp:1.0.0 /app/config.yaml /config/
