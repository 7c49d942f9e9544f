(defproject hello "1.0.0"
  :description "A web app with Clojure alone (the JDK's HTTP server), built into one jar"
  :dependencies [[org.clojure/clojure "1.12.0"]]
  :main hello.core
  :aot [hello.core]
  :uberjar-name "hello-standalone.jar")
