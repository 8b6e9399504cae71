# Stage 1: Build the application
FROM golang:1.18-alpine AS builder

# Set the working directory
WORKDIR /app

# Copy the Go module files and download dependencies
COPY go.mod go.sum ./
RUN go mod download

# Copy the rest of the application files
COPY . .

# Build the Go application
RUN go build -o myapp

# Stage 2: Create the final runtime image
FROM alpine:latest

# Set the working directory in the final image
WORKDIR /root/

# Copy the compiled application from the builder stage
COPY --from=builder /app/myapp .

# Run the application
CMD ["./myapp"]
