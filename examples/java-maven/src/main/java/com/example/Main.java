package com.example;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

/** A web app with no dependencies: the JDK's own HTTP server on $PORT. */
public final class Main {
    private Main() {
    }

    /** 2^100, computed at request time. */
    static String body(String path) {
        BigInteger n = BigInteger.TWO.pow(100);
        long maxHeap = Runtime.getRuntime().maxMemory() / (1024 * 1024);
        return "Hello from Java " + Runtime.version().feature() + " at " + path
                + ": 2^100 is " + n + " (max heap " + maxHeap + " MB)\n";
    }

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "5000"));
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", exchange -> {
            byte[] out = body(exchange.getRequestURI().getPath()).getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
            exchange.sendResponseHeaders(200, out.length);
            try (OutputStream os = exchange.getResponseBody()) {
                os.write(out);
            }
        });
        server.start();
        System.out.println("listening on :" + port);
    }
}
