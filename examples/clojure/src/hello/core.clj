(ns hello.core
  "A web app with Clojure alone: the JDK's HTTP server on $PORT."
  (:import (com.sun.net.httpserver HttpServer HttpHandler)
           (java.net InetSocketAddress))
  (:gen-class))

(defn body [path]
  (str "Hello from Clojure " (clojure-version) " at " path
       ": the first 10 Fibonacci numbers are "
       (vec (take 10 (map first (iterate (fn [[a b]] [b (+ a b)]) [0 1]))))
       "\n"))

(defn -main [& _]
  (let [port (Integer/parseInt (or (System/getenv "PORT") "5000"))
        server (HttpServer/create (InetSocketAddress. port) 0)]
    (.createContext server "/"
                    (reify HttpHandler
                      (handle [_ exchange]
                        (let [out (.getBytes (body (.getPath (.getRequestURI exchange))) "UTF-8")]
                          (.add (.getResponseHeaders exchange) "Content-Type" "text/plain; charset=utf-8")
                          (.sendResponseHeaders exchange 200 (alength out))
                          (with-open [os (.getResponseBody exchange)]
                            (.write os out))))))
    (.start server)
    (println "listening on" port)))
