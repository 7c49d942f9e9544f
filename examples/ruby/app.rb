require "sinatra/base"

# A Sinatra app on Puma: the page is computed per request.
class Greeter < Sinatra::Base
  get "/" do
    content_type :text
    primes = (2..100).select { |n| (2..Math.sqrt(n)).none? { |d| (n % d).zero? } }
    "Hello from Sinatra #{Sinatra::VERSION} on Ruby #{RUBY_VERSION} (Puma #{Puma::Const::PUMA_VERSION}): " \
      "#{primes.size} primes below 100, the largest #{primes.last}\n"
  end

  get "/hello/:name" do
    content_type :text
    "Hello, #{params[:name].capitalize}!\n"
  end
end
