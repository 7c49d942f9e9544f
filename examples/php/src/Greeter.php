<?php

declare(strict_types=1);

namespace App;

/** Loaded through Composer's optimized autoloader. */
final class Greeter
{
    public function greet(string $path): string
    {
        $primes = array_filter(range(2, 100), static function (int $n): bool {
            for ($d = 2; $d * $d <= $n; $d++) {
                if ($n % $d === 0) {
                    return false;
                }
            }
            return true;
        });
        return sprintf("Hello from PHP %s at %s: %d primes below 100\n",
            PHP_VERSION, $path, count($primes));
    }
}
