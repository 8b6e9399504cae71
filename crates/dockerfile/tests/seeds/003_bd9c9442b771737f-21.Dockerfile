# Сначала зависимости
COPY go.mod go.sum ./
RUN go mod download

# Потом код
COPY . .
RUN go build -o main .
