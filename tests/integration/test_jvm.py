"""The JVM languages, each pushed with git over ssh as a user would: a Maven app built
offline against Debian's Maven repository and run as `java -jar` with the heap Heroku
gives the dyno size; the second push reusing ~/.m2; a Java version the stack lacks, a
Maven wrapper, a Gradle wrapper and sbt that cannot download their tools refused with
the previous release serving; a Clojure app built with Debian's Leiningen."""

from __future__ import annotations

import base64
import re
import time

import pytest

from tests.integration.test_builds import EXAMPLES, commit, current, push, setup_push, sh
from tests.integration.test_dynos import diagnose, wait_for
from tests.integration.test_languages import page
from tests.sandbox.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.network, pytest.mark.layers("jvm")]

POW = "2^100 is 1267650600228229401496703205376"


def git(m: Machine, app: str, script: str) -> None:
    sh(m, f"cd /tmp/{app} && {script} && git add -A && "
          "git -c user.email=t@example.com -c user.name=t commit -qm change")


# A Java client of https://<app>.<domain>, run as a single source file (java Fetch.java).
FETCH = """import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(
            HttpRequest.newBuilder(URI.create(args[0])).build(),
            HttpResponse.BodyHandlers.ofString());
        System.out.println("status " + r.statusCode() + ": " + r.body());
    }
}
"""


def java_calls_over_https(m: Machine, app: str) -> None:
    """A JVM dyno trusts dynod's local CA, as OpenSSL's users in dynos do: Java's own
    trust store (cacerts) has it, so an app's https:// URL answers through the router
    (before, the handshake failed: PKIX path building failed)."""
    source = base64.b64encode(FETCH.encode()).decode()
    out = sh(m, f"dynoctl run -a {app} -- 'echo {source} | base64 -d > /tmp/Fetch.java && "
                f"java /tmp/Fetch.java https://{app}.dynod.localhost/tls; "
                "keytool -list -cacerts -storepass changeit | grep -ic \"^dynod local ca\"' 2>&1",
             ok=False)[1]
    assert f"status 200: Hello from Java 21 at /tls: {POW}" in out, out
    assert out.rstrip().endswith("\n1"), out  # with the password, as Debian's cacerts


def test_java_maven_app(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "javamvn", str(EXAMPLES / "java-maven"))
    started = time.monotonic()
    out = push(m, "javamvn")
    first = time.monotonic() - started
    for line in ("remote: -----> Java app detected",
                 "remote: -----> Executing Maven",
                 "remote:        $ mvn -DskipTests clean "
                 "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:list install",
                 "remote:        [INFO] BUILD SUCCESS",
                 "remote:        Released v2"):
        assert line in out, out
    assert re.search(r"remote: -----> Using the stack's OpenJDK 21\.[\d.]+ "
                     r"\(system.properties java.runtime.version: 21\)", out), out
    assert re.search(r"remote: -----> Using the stack's Maven 3\.9\.\d+", out), out
    # Everything the pom needs is in Debian's repository: nothing is downloaded.
    assert "Downloading from" not in out and "Restoring cache" not in out, out
    try:
        wait_for("the Java page", lambda: POW in page(m, "javamvn", "/x"), 60)
    except AssertionError:
        raise AssertionError(diagnose(m, "javamvn")) from None
    body = page(m, "javamvn", "/x")
    assert "Hello from Java 21 at /x" in body, body
    # JAVA_OPTS from .profile.d: Heroku's -Xmx300m for a 512 MB dyno.
    heap = re.search(r"max heap (\d+) MB", body)
    assert heap is not None and 250 <= int(heap.group(1)) <= 310, body
    run = sh(m, "dynoctl run -a javamvn -- 'java -version 2>&1; echo \"opts: $JAVA_OPTS\"'")[1]
    assert re.search(r'openjdk version "21\.', run), run
    assert "opts: -Xmx300m -Xss512k -XX:CICompilerCount=2" in run, run
    java_calls_over_https(m, "javamvn")

    # A second push: ~/.m2 is restored, nothing downloaded.
    commit(m, "javamvn", "README", "again\n")
    started = time.monotonic()
    out = push(m, "javamvn")
    warm = time.monotonic() - started
    assert "remote: -----> Restoring cache" in out, out
    assert "Downloading from" not in out and "Downloaded from" not in out, out
    assert "remote:        Released v3" in out, out
    print(f"java-maven: first push {first:.1f} s, second push {warm:.1f} s")

    # A Java the stack lacks: refused naming what it has; the release keeps serving.
    commit(m, "javamvn", "system.properties", "java.runtime.version=17\n")
    out = push(m, "javamvn", ok=False)
    assert ("asks for java.runtime.version=17, but the debian-13 stack has OpenJDK 21 only"
            in out), out
    assert "Set java.runtime.version=21 in system.properties" in out, out
    assert "dynoctl stacks:set NAME" in out, out

    # A Maven wrapper that must download Maven, which this build cannot reach.
    commit(m, "javamvn", "system.properties", "java.runtime.version=21\n")
    git(m, "javamvn", "mkdir -p .mvn/wrapper && printf '%s\\n' "
        "'distributionUrl=https://repo.maven.apache.org/maven2/org/apache/maven/"
        "apache-maven/3.9.9/apache-maven-3.9.9-bin.zip' > .mvn/wrapper/maven-wrapper.properties"
        " && printf '#!/bin/sh\\necho the wrapper ran\\nexit 1\\n' > mvnw && chmod +x mvnw")
    out = push(m, "javamvn", ok=False)
    assert "The app's Maven wrapper (mvnw) must download its Maven, https://repo.maven.apache" \
        ".org/maven2/org/apache/maven/apache-maven/3.9.9/apache-maven-3.9.9-bin.zip, and this " \
        "build cannot reach it." in out, out
    assert "remove mvnw and .mvn/wrapper from the app" in out, out
    assert "the wrapper ran" not in out, out
    assert current(m, "javamvn")["version"] == 3
    assert POW in page(m, "javamvn")

    # A bigger dyno gets Heroku's bigger heap: the profile reads the dyno's cgroup.
    sh(m, "dynoctl ps:type web=standard-2x -a javamvn")

    def heap_mb() -> int:
        found = re.search(r"max heap (\d+) MB", page(m, "javamvn"))
        return int(found.group(1)) if found else 0
    try:
        wait_for("the Standard-2X heap (-Xmx671m)", lambda: 600 <= heap_mb() <= 700, 60)
    except AssertionError:
        raise AssertionError(diagnose(m, "javamvn") + page(m, "javamvn") + sh(
            m, "dynoctl run -s standard-2x -a javamvn -- 'cat /proc/self/cgroup; "
            "ls /sys/fs/cgroup | head; cat /sys/fs/cgroup/memory.max; echo $JAVA_OPTS'")[1]
            + sh(m, "systemctl show -p MemoryMax 'dynod-javamvn-web*'")[1]) from None

    # A JAVA_OPTS config var with its own -Xmx wins over the dyno size's.
    sh(m, "dynoctl config:set JAVA_OPTS=-Xmx200m -a javamvn")
    run = sh(m, "dynoctl run -a javamvn -- 'echo \"opts: $JAVA_OPTS\"'")[1]
    assert "opts: -Xmx200m\n" in run, run


def test_gradle_and_sbt_fail_clearly(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "jvmtools", str(EXAMPLES / "java-maven"))
    push(m, "jvmtools")
    wait_for("the Java page", lambda: POW in page(m, "jvmtools"), 60)

    # The same app moved to Gradle: its wrapper must download Gradle.
    git(m, "jvmtools", "git rm -q pom.xml && mkdir -p gradle/wrapper && "
        "printf \"plugins { id 'application' }\\n\" > build.gradle && "
        "printf '%s\\n' 'distributionUrl=https\\://services.gradle.org/distributions/"
        "gradle-8.10.2-bin.zip' > gradle/wrapper/gradle-wrapper.properties && "
        "printf '#!/bin/sh\\necho the wrapper ran\\nexit 1\\n' > gradlew && chmod +x gradlew")
    out = push(m, "jvmtools", ok=False)
    assert "remote: -----> Gradle app detected" in out, out
    assert ("The app's Gradle wrapper (gradlew) must download its Gradle distribution, "
            "https://services.gradle.org/distributions/gradle-8.10.2-bin.zip, and this build "
            "cannot reach it") in out, out
    assert "dynoctl buildpacks:set GIT_URL" in out, out
    assert "the wrapper ran" not in out, out

    # Then to sbt, which Debian does not have.
    git(m, "jvmtools", "git rm -q -r gradlew gradle build.gradle && mkdir -p project && "
        "printf 'sbt.version=1.10.7\\n' > project/build.properties && "
        "printf 'scalaVersion := \"3.3.4\"\\n' > build.sbt")
    out = push(m, "jvmtools", ok=False)
    assert "remote: -----> Scala app detected" in out, out
    assert ("This app builds with sbt 1.10.7, and the debian-13 stack has no sbt: Debian does "
            "not package it") in out, out
    assert "dynoctl buildpacks:set GIT_URL" in out, out
    assert current(m, "jvmtools")["version"] == 2
    assert POW in page(m, "jvmtools")


def test_clojure_uberjar_offline(stack_machine: Machine) -> None:
    m = stack_machine
    setup_push(m, "clj", str(EXAMPLES / "clojure"))
    started = time.monotonic()
    out = push(m, "clj")
    first = time.monotonic() - started
    for line in ("remote: -----> Clojure (Leiningen 2) app detected",
                 "remote: -----> Using the stack's Leiningen 2.10.0",
                 "remote:        Running: lein uberjar",
                 "remote:        Retrieving org/clojure/clojure/1.12.0/clojure-1.12.0.jar "
                 "from debian",
                 "remote:        Default types for buildpack -> web",
                 "remote:        Released v2"):
        assert line in out, out
    assert re.search(r"remote:        Created /\S+/target/hello-standalone\.jar", out), out
    assert "from central" not in out and "from clojars" not in out, out
    try:
        wait_for("the Clojure page",
                 lambda: "[0 1 1 2 3 5 8 13 21 34]" in page(m, "clj", "/fib"), 60)
    except AssertionError:
        raise AssertionError(diagnose(m, "clj")) from None
    assert "Hello from Clojure 1.12.0 at /fib" in page(m, "clj", "/fib")
    run = sh(m, "dynoctl run -a clj -- 'java -version 2>&1'")[1]
    assert re.search(r'openjdk version "21\.', run), run

    commit(m, "clj", "README", "again\n")
    started = time.monotonic()
    out = push(m, "clj")
    print(f"clojure: first push {first:.1f} s, second push {time.monotonic() - started:.1f} s")
    assert "remote: -----> Restoring cache" in out, out
    assert "Retrieving" not in out, out
    assert "remote:        Released v3" in out, out
