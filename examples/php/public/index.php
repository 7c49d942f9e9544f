<?php

declare(strict_types=1);

// The front controller: every path that is not a file under public/ comes here.
require __DIR__ . '/../vendor/autoload.php';

header('Content-Type: text/plain');
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';
echo (new App\Greeter())->greet($path);
echo 'https: ' . (($_SERVER['HTTPS'] ?? 'off') === 'on' ? 'yes' : 'no') . "\n";
