# İlk aşama: Go uygulamasını derleme
FROM golang:1.19 AS builder

# Çalışma dizinini ayarlama
WORKDIR /app

# Go modül dosyalarını kopyalama
COPY go.mod ./
COPY go.sum ./

# Modülleri indirme
RUN go mod download

# Uygulamayı kopyalama
COPY . .

# Uygulamayı derleme
RUN go build -o myapp

# İkinci aşama: Minimal bir imaj ile çalıştırma
FROM alpine:latest

# Çalışma dizinini ayarlama
WORKDIR /app

# Derlenmiş uygulamayı kopyalama
COPY --from=builder /app/myapp .

# Konteynerin çalıştırılacağı komut
CMD ["./myapp"]

# Konteynerin dinleyeceği port
EXPOSE 8080
