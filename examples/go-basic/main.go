// main.go
package main

import (
    "fmt"
    "net/http"
)

func handler(w http.ResponseWriter, r *http.Request) {
    fmt.Fprintf(w, "Merhaba, Multi-Stage Dockerfile ile kapsüllenmiş uygulama!")
}

func main() {
    http.HandleFunc("/", handler)
    fmt.Println("Sunucu 8080 portunda çalışıyor...")
    if err := http.ListenAndServe(":8080", nil); err != nil {
        fmt.Println("Sunucu başlatılamadı:", err)
    }
}
