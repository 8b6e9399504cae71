# ========================================
# Stage 1: Dependencies
# ========================================
FROM node:18-alpine AS deps

WORKDIR /app

COPY package.json package-lock.json ./

RUN npm ci --only=production

# ========================================
# Stage 2: Build
# ========================================
FROM node:18-alpine AS builder

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci

COPY . .

# Сборка (TypeScript, Webpack, etc)
RUN npm run build

# ========================================
# Stage 3: Runtime
# ========================================
FROM node:18-alpine

WORKDIR /app

# Копировать зависимости из deps stage
COPY --from=deps /app/node_modules ./node_modules

# Копировать собранное приложение из builder stage
COPY --from=builder /app/dist ./dist
COPY package.json .

RUN adduser -D -u 1000 appuser && chown -R appuser:appuser /app
USER appuser

EXPOSE 3000

CMD ["node", "dist/index.js"]
