<?php
// php platform.php composer.json: checks composer.json's "require"."php" against the
// running PHP with Composer's own constraint parser (Debian's php-composer-semver), and
// says whether the app has dependencies beyond the platform (php, ext-*, lib-*).
// Prints "ok|mismatch|invalid <constraint>" then "deps|nodeps"; the exit code is 0.
require '/usr/share/php/Composer/Semver/autoload.php';

$json = json_decode((string) file_get_contents($argv[1]), true);
if (!is_array($json)) {
    echo "invalid-json\n";
    exit(0);
}
$require = is_array($json['require'] ?? null) ? $json['require'] : [];
$constraint = isset($require['php']) ? (string) $require['php'] : '';
if ($constraint === '') {
    echo "ok *\n";
} else {
    try {
        $ok = Composer\Semver\Semver::satisfies(PHP_VERSION, $constraint);
        echo ($ok ? 'ok ' : 'mismatch ') . $constraint . "\n";
    } catch (\Throwable $e) {
        echo 'invalid ' . $constraint . "\n";
    }
}
$deps = array_filter(array_keys($require), fn ($name) =>
    $name !== 'php' && !str_starts_with($name, 'ext-') && !str_starts_with($name, 'lib-')
    && !str_starts_with($name, 'php-'));
echo ($deps ? 'deps' : 'nodeps') . "\n";
