# -------- Stage 1: Build Stage --------
FROM golang:1.22 AS builder

# Set working directory
WORKDIR /app

# Copy Go files
COPY . .

# Download dependencies and build binary
RUN go mod download
RUN go build -o myapp

# -------- Stage 2: Run Stage --------
FROM alpine:latest

# Set working directory
WORKDIR /root/

# Copy only the binary from builder stage
COPY --from=builder /app/myapp .

# Expose port (optional)
EXPOSE 8080

# Run the app
CMD ["./myapp"]
